"""Several processes, one run: torchrun or SLURM tasks, one per GPU (or CPU processes with gloo).

Semantics (README, "Several GPUs"):

* ``dataset.batch_size`` is the *global* batch; each of the W ranks takes a contiguous 1/W of
  every global batch, so the ranks together see exactly the batches, crops and flips of a
  single-process run with the same seed (augmentation is a function of (seed, epoch, sample)).
* Gradients are averaged across ranks (DDP), so with BatchNorm statistics synchronised
  (``trainer.distributed.sync_bn``) a W-rank step is the single-process step; without it each
  rank normalises with its own 1/W of the batch, as DDP users usually do.
* Contrastive memories (banks, FIFO queues, the negative sampler) see the global batch: indices,
  labels and embeddings are gathered before every draw and update, so all ranks hold the same
  memory, equal to the single-process one.
* Metrics are summed across ranks as counts; only rank 0 writes checkpoints, logs and W&B.

Nothing here is needed for one process: every helper is the identity when no process group is
initialised.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from distillbench.errors import ConfigError

log = logging.getLogger("distillbench")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launcher_environment() -> dict[str, str] | None:
    """RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from torchrun or from a multi-task SLURM step."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
                if k in os.environ}
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        # One SLURM task per GPU (srun, or submitit's tasks_per_node): rank and host list from SLURM's
        # variables, read by submitit's parser; the port is derived from the job id, so every task and
        # every requeue of the job agrees on it.
        from submitit.slurm.slurm import SlurmJobEnvironment

        job = SlurmJobEnvironment()
        port = os.environ.get("MASTER_PORT") or str(20000 + int(job.job_id.split("_")[0]) % 40000)
        return {"RANK": str(job.global_rank), "WORLD_SIZE": str(job.num_tasks), "LOCAL_RANK": str(job.local_rank),
                "MASTER_ADDR": job.hostnames[0], "MASTER_PORT": port}
    return None


def init_distributed(device_type: str, backend: str = "auto", timeout_s: int = 1800) -> DistContext:
    """Join the process group the launcher describes; one process without a launcher."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    env = launcher_environment()
    if env is None or int(env["WORLD_SIZE"]) == 1:
        return DistContext()
    os.environ.update(env)
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    log.info("rank %d of %d (local %d), backend %s", rank, world, local, backend)
    return DistContext(rank, world, local)


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def _all_reduce(tensor: Tensor, op: dist.ReduceOp) -> Tensor:
    """``op`` over ranks, as a new tensor; ``tensor`` itself is left alone."""
    if not is_distributed():
        return tensor
    result = tensor.clone()
    dist.all_reduce(result, op=op)
    return result


def all_reduce_sum(tensor: Tensor) -> Tensor:
    return _all_reduce(tensor, dist.ReduceOp.SUM)


def all_reduce_max(tensor: Tensor) -> Tensor:
    return _all_reduce(tensor, dist.ReduceOp.MAX)


def all_reduce_min(tensor: Tensor) -> Tensor:
    return _all_reduce(tensor, dist.ReduceOp.MIN)


def average_gradients(params) -> None:
    """Average the gradients of parameters that DDP does not own (the distiller's extras, init stages)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BN statistics) on every rank, so all ranks evaluate and save the same model."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def row_counts(local_rows: int, device: torch.device) -> list[int]:
    """How many rows each rank holds (ranks differ on the last partial batch): one small all-gather."""
    if not is_distributed():
        return [local_rows]
    size = torch.tensor([local_rows], device=device)
    sizes = [torch.empty_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def gather_rows(tensor: Tensor, counts: list[int]) -> Tensor:
    """The ranks' tensors concatenated along dim 0 in rank order, given ``row_counts``; no gradient flows back."""
    if not is_distributed():
        return tensor
    padded = tensor.detach().new_zeros((max(counts), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor.detach()
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


def gather_batch(tensor: Tensor) -> Tensor:
    """The global batch of a per-rank tensor (rank order)."""
    return gather_rows(tensor, row_counts(tensor.shape[0], tensor.device))


def own_slice(counts: list[int]) -> slice:
    """This rank's rows in a tensor laid out like ``gather_rows``'s result."""
    start = sum(counts[: rank()])
    return slice(start, start + counts[rank()])


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def check_batch_divides(dataset_size: int, batch_size: int, world: int) -> None:
    """Every rank needs a sample in every step, the last partial batch included."""
    tail = dataset_size % batch_size
    if batch_size < world or 0 < tail < world:
        raise ConfigError(
            f"dataset.batch_size={batch_size} is the global batch, split over {world} ranks, and the last batch of "
            f"{tail} images cannot give each rank one. Choose a global batch size of at least {world} whose "
            f"remainder on {dataset_size} images is 0 or at least {world}."
        )
