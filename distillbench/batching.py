"""The global batch and each rank's share of it, in one place.

``dataset.batch_size`` and ``dataset.test_batch_size`` are *global* batches: what one step sees over all
ranks together, so that a run's recipe reads the same on one GPU and on eight. Each of the ``world_size``
ranks loads a contiguous share of every global batch. The loaders, the samplers and the run record convert
between the two only through these helpers, so they cannot disagree.
"""

from __future__ import annotations

from distillbench.errors import ConfigError
from distillbench.runtime.distributed import check_batch_divides


def global_batch_size(rank_batch: int, world_size: int) -> int:
    """The batch one step sees over all ranks, from each rank's share."""
    return rank_batch * world_size


def per_rank_batch(global_batch: int, dataset_size: int, world_size: int) -> int:
    """Each rank's training batch. The global batch must split evenly (every rank takes the same steps
    with the same share), and the epoch's last partial batch must still give every rank a sample."""
    if world_size == 1:
        return global_batch
    if global_batch % world_size:
        raise ConfigError(
            f"dataset.batch_size={global_batch} is the global batch and must split evenly over {world_size} ranks; "
            f"choose a multiple of {world_size}; trainer.distributed.lr_scaling says how the lr follows the batch."
        )
    check_batch_divides(dataset_size, global_batch, world_size)
    return global_batch // world_size


def eval_rank_batch(global_batch: int, world_size: int) -> int:
    """Each rank's evaluation batch: the global one split, at least one sample (evaluation sums counts over
    ranks, so an uneven split changes nothing)."""
    return max(1, global_batch // world_size)
