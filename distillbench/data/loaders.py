"""DataLoaders with the recipe's batching: shuffled training batches, the last partial batch kept unless the
recipe drops it (``drop_last``) or it is smaller than the method can use (``last_batch_dropped``)."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader, Dataset

from distillbench.batching import global_batch_size
from distillbench.data.sampling import EpochSeededDataset, EpochShuffleSampler

log = logging.getLogger("distillbench")


def last_batch_dropped(num_samples: int, batch_size: int, *, world_size: int = 1, drop_last: bool = False,
                       min_batch_size: int = 1, needed_by: str = "the method") -> bool:
    """Whether a training epoch of ``num_samples`` in global batches of ``batch_size * world_size`` drops its last
    partial batch: when the recipe says so (``drop_last``), or when some rank's share of it would hold fewer than
    ``min_batch_size`` samples (a method that relates the samples of a batch to each other cannot use it). The
    second case is logged, naming ``needed_by``."""
    global_batch = global_batch_size(batch_size, world_size)
    tail = num_samples % global_batch
    if drop_last or tail == 0:
        return drop_last
    smallest_share = tail // world_size  # rank shares differ by at most one sample (sampling.rank_share)
    if smallest_share >= min_batch_size:
        return False
    log.info(
        "Dropping the last partial training batch of every epoch: %d sample(s)%s, fewer than the %d that %s needs "
        "in a batch (%d of %d training samples are left out of each epoch, a different random set each time).",
        tail, f" over {world_size} ranks" if world_size > 1 else "", min_batch_size, needed_by, tail, num_samples,
    )
    return True


class FullBatchSampler(EpochShuffleSampler):
    """``EpochShuffleSampler`` serving only the epoch's full global batches: the same order, the last partial
    batch left out (on every rank alike, so the ranks keep taking the same number of steps)."""

    def kept(self) -> int:
        return self.num_samples // self.global_batch * self.global_batch

    def permutation(self) -> torch.Tensor:
        return super().permutation()[:self.kept()]

    def __len__(self) -> int:
        return max(0, self.kept() - self.skip) // self.world_size


class EpochDataLoader(DataLoader):
    """A DataLoader that takes the epoch like every other training loader: ``set_epoch(epoch, skip)``, ``skip``
    counting the samples of the epoch already consumed (all ranks), for a run resumed mid-epoch."""

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch, skip)
        self.dataset.set_epoch(epoch)


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
    drop_last: bool = False,
) -> tuple[EpochDataLoader, DataLoader]:
    """The training loader's order and augmentations depend only on (seed, epoch): see ``sampling``.

    ``batch_size`` and ``test_batch_size`` are per rank; on several ranks each takes its share
    of every global batch, of the training and of the test set. ``drop_last`` leaves each
    epoch's last partial training batch out (the test set is always served whole).
    """
    pin = torch.device(device).type == "cuda"
    test_workers = num_workers if test_num_workers is None else test_num_workers
    shards = {"rank": rank, "world_size": world_size}
    sampler_type = FullBatchSampler if drop_last else EpochShuffleSampler
    train_sampler = sampler_type(len(train), seed, batch_size=batch_size, **shards)
    train_loader = EpochDataLoader(
        EpochSeededDataset(train, seed), batch_size=batch_size, sampler=train_sampler,
        drop_last=drop_last, num_workers=num_workers, pin_memory=pin,
    )
    test_sampler = EpochShuffleSampler(len(test), seed, batch_size=test_batch_size, shuffle=False, **shards)
    test_loader = DataLoader(test, batch_size=test_batch_size, sampler=test_sampler, num_workers=test_workers,
                             pin_memory=pin)
    return train_loader, test_loader
