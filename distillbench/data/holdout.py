"""A validation split carved out of the training set, so hyperparameters are never tuned on test data.

The split a run is scored on carries its name (``split``: "holdout" here, "test" when absent), and both parts
carry ``eval_split`` in their provenance, which run.json records: a score on held-out training images is
labelled as such wherever the run is reported, never as a test accuracy.
"""

from __future__ import annotations

import torch

from distillbench.data.instance import InstanceDataset
from distillbench.errors import ConfigError

TEST_SPLIT = "test"
HOLDOUT_SPLIT = "holdout"


def eval_split_name(eval_set) -> str:
    """The name of the split ``eval_set`` is: "holdout" for images held out of the training set, else "test"."""
    return getattr(eval_set, "split", TEST_SPLIT)


def holdout_split(train: InstanceDataset, fraction: float, seed: int, eval_transform) -> tuple[
        InstanceDataset, InstanceDataset]:
    """Split ``train`` per class into (train part, held-out part) with ``fraction`` of each class held out.

    The split depends only on ``seed`` (not on the run's seed), so every trial of a sweep is scored
    on the same images. Both parts are new datasets whose indices run from 0, which keeps
    per-sample memories (CRD) sized to the images actually trained on. The held-out part uses
    ``eval_transform`` (no augmentation), as the test set does, and is named "holdout"; both parts keep
    ``train``'s provenance, with ``eval_split: holdout`` added.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"The held-out fraction must lie strictly between 0 and 1, got {fraction}; set "
                          "dataset.holdout.fraction to e.g. 0.1, or dataset.holdout=null to score on the test set.")
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
    provenance = {**(getattr(train, "provenance", None) or {}), "eval_split": HOLDOUT_SPLIT}

    def part(indices, transform) -> InstanceDataset:
        subset = InstanceDataset(train.data[indices], train.targets[indices], transform=transform,
                                 classes=train.classes, num_classes=train.num_classes)
        subset.provenance = dict(provenance)
        return subset

    trained, scored = part(keep, train.transform), part(out, eval_transform)
    scored.split = HOLDOUT_SPLIT
    return trained, scored
