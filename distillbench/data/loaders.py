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
) -> tuple[DataLoader, DataLoader]:
    """The training loader's order and augmentations depend only on (seed, epoch): see ``sampling``."""
    pin = torch.device(device).type == "cuda"
    test_workers = num_workers if test_num_workers is None else test_num_workers
    train_loader = DataLoader(
        EpochSeededDataset(train, seed), batch_size=batch_size, sampler=EpochShuffleSampler(len(train), seed),
        drop_last=False, num_workers=num_workers, pin_memory=pin,
    )
    test_loader = DataLoader(test, batch_size=test_batch_size, shuffle=False, num_workers=test_workers,
                             pin_memory=pin)
    return train_loader, test_loader
