"""DataLoaders with the recipe's batching: shuffled training batches, the last partial batch kept."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from distillbench.data.sampling import EpochSeededDataset, EpochShuffleSampler


def make_loaders(
    train: Dataset,
    test: Dataset,
    batch_size: int,
    test_batch_size: int,
    num_workers: int = 0,
    test_num_workers: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[DataLoader, DataLoader]:
    """The training loader's order and augmentations depend only on (seed, epoch): see ``sampling``.

    ``batch_size`` and ``test_batch_size`` are per rank; on several ranks each takes its share
    of every global batch, of the training and of the test set.
    """
    pin = torch.device(device).type == "cuda"
    test_workers = num_workers if test_num_workers is None else test_num_workers
    shards = {"rank": rank, "world_size": world_size}
    train_sampler = EpochShuffleSampler(len(train), seed, batch_size=batch_size, **shards)
    train_loader = DataLoader(
        EpochSeededDataset(train, seed), batch_size=batch_size, sampler=train_sampler,
        drop_last=False, num_workers=num_workers, pin_memory=pin,
    )
    test_sampler = EpochShuffleSampler(len(test), seed, batch_size=test_batch_size, shuffle=False, **shards)
    test_loader = DataLoader(test, batch_size=test_batch_size, sampler=test_sampler, num_workers=test_workers,
                             pin_memory=pin)
    return train_loader, test_loader
