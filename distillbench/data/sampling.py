"""Training order and augmentation draws that are pure functions of (seed, epoch, position).

A run resumed in the middle of an epoch must see exactly the batches, and exactly the random
crops and flips, that the uninterrupted run saw. So the shuffle is drawn from a generator
seeded by (seed, epoch), the sampler can start part-way through it, and each sample's
augmentation is seeded by (seed, epoch, sample index): which worker loads a sample, and how
many samples were loaded before it, no longer matter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from distillbench.batching import global_batch_size
from distillbench.runtime.seeding import epoch_seed


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch, from ``(seed, epoch)``; ``skip`` resumes mid-epoch.

    On several ranks (``world_size > 1``) each global batch of ``batch_size * world_size``
    consecutive positions is split into contiguous shares, rank r taking the r-th: the ranks
    together serve the single-process run's batches. ``skip`` counts samples of the whole
    epoch (all ranks). ``shuffle=False`` keeps dataset order (a sharded test set).
    """

    def __init__(self, num_samples: int, seed: int = 0, *, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1, shuffle: bool = True):
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.global_batch = global_batch_size(batch_size, world_size)
        self.shuffle = shuffle
        self.epoch = 1
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    def permutation(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def positions(self) -> torch.Tensor:
        """This rank's samples of the epoch, in order, after ``skip``."""
        order = self.permutation()[self.skip:]
        if self.world_size == 1:
            return order
        return torch.cat([rank_share(order[start:start + self.global_batch], self.rank, self.world_size)
                          for start in range(0, len(order), self.global_batch)] or [order])

    def __iter__(self) -> Iterator[int]:
        return iter(self.positions().tolist())

    def __len__(self) -> int:
        remaining = self.num_samples - self.skip
        if self.world_size == 1:
            return remaining
        full, tail = divmod(remaining, self.global_batch)
        rank, world = self.rank, self.world_size
        return full * (self.global_batch // world) + (rank + 1) * tail // world - rank * tail // world


def rank_share(batch, rank: int, world_size: int):
    """Rank ``rank``'s contiguous share of one global batch; shares differ by at most one sample."""
    n = len(batch)
    return batch[rank * n // world_size:(rank + 1) * n // world_size]


class EpochSeededDataset(Dataset):
    """Seeds torch's RNG from (seed, epoch, index) before each sample's random transform."""

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        torch.manual_seed(epoch_seed(self.seed, self.epoch) ^ (index * 2_654_435_761 % 2**61))
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        # targets, num_classes, classes, ... of the wrapped dataset.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class EpochLoader:
    """What the device-side loaders share: told the epoch and the samples already consumed
    (``set_epoch(epoch, skip)``), serving this rank's share of global batches of
    ``batch_size * world_size``, the last partial batch kept unless ``drop_last``."""

    def __init__(self, dataset, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 1
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Serve epoch ``epoch`` from its ``skip``-th sample on (a run resumed mid-epoch)."""
        if not 0 <= skip <= len(self.dataset):
            raise ValueError(f"skip must lie in [0, {len(self.dataset)}], got {skip}")
        self.epoch = epoch
        self.skip = skip

    @property
    def global_batch_size(self) -> int:
        return global_batch_size(self.batch_size, self.world_size)

    def __len__(self) -> int:
        remaining, step = len(self.dataset) - self.skip, self.global_batch_size
        return remaining // step if self.drop_last else -(-remaining // step)


def start_epoch(loader, epoch: int, skip: int = 0) -> None:
    """Point a training loader at ``epoch``, skipping the first ``skip`` samples (a resumed epoch).

    Every training loader distillbench builds takes the epoch itself (``set_epoch(epoch, skip)``: the
    DataLoader of ``make_loaders``, the device-resident and the JPEG loaders); a plain DataLoader over an
    epoch-aware sampler and dataset is served too.
    """
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch, skip)
        return
    sampler, dataset = loader.sampler, loader.dataset
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch, skip)
    elif skip:
        raise RuntimeError("Resuming mid-epoch needs a sampler with set_epoch(epoch, skip); see data.sampling.")
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
