"""A validation split carved out of the training set, so hyperparameters are never tuned on test data."""

from __future__ import annotations

import torch

from distillbench.data.instance import InstanceDataset


def holdout_split(train: InstanceDataset, fraction: float, seed: int, eval_transform) -> tuple[
        InstanceDataset, InstanceDataset]:
    """Split ``train`` per class into (train part, held-out part) with ``fraction`` of each class held out.

    The split depends only on ``seed`` (not on the run's seed), so every trial of a sweep is scored
    on the same images. Both parts are new datasets whose indices run from 0, which keeps
    per-sample memories (CRD) sized to the images actually trained on. The held-out part uses
    ``eval_transform`` (no augmentation), as the test set does.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"The held-out fraction must lie strictly between 0 and 1, got {fraction}.")
    generator = torch.Generator().manual_seed(seed)
    targets = torch.as_tensor(train.targets)
    held_out = []
    for label in range(train.num_classes):
        members = torch.nonzero(targets == label).flatten()
        if len(members) == 0:
            continue
        count = max(1, round(fraction * len(members)))
        held_out.append(members[torch.randperm(len(members), generator=generator)[:count]])
    held = torch.zeros(len(targets), dtype=torch.bool)
    held[torch.cat(held_out)] = True
    keep, out = (~held).nonzero().flatten().numpy(), held.nonzero().flatten().numpy()

    def part(indices, transform) -> InstanceDataset:
        return InstanceDataset(train.data[indices], train.targets[indices], transform=transform,
                               classes=train.classes, num_classes=train.num_classes)

    return part(keep, train.transform), part(out, eval_transform)
