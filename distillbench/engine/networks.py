"""Getting the networks ready before the first step: frozen teacher, distiller extras, DDP and compilation."""

from __future__ import annotations

import logging

import torch
from torch import nn

from distillbench.distillers.base import Distiller
from distillbench.engine.evaluation import evaluate
from distillbench.engine.speed import SpeedOptions
from distillbench.models.outputs import probe_shapes
from distillbench.runtime import distributed

log = logging.getLogger("distillbench")


def freeze(teacher: nn.Module, device: torch.device) -> None:
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)


def set_up_distiller(distiller: Distiller, model: nn.Module, teacher: nn.Module, train_set,
                     device: torch.device) -> None:
    """Size the distiller's extras from one dry forward of both networks on two training images."""
    shape = (2, *train_set[0][0].shape)
    distiller.to(device)
    student_probe = probe_shapes(model, shape, preact=distiller.preact)
    teacher_probe = probe_shapes(teacher, shape, preact=distiller.preact)
    distiller.setup(student_probe, teacher_probe, torch.as_tensor(train_set.targets, dtype=torch.long))
    distiller.to(device)
    if distiller.teacher_grad:
        for p in teacher.parameters():
            p.requires_grad_(True)


def check_teacher(teacher: nn.Module, test_loader, device: torch.device, expected: float | None,
                  tolerance: float) -> float:
    """The teacher's test top-1, with a warning when it is far below what its config expects."""
    acc1 = evaluate(teacher, test_loader, device)["acc1"]
    log.info("teacher test top-1: %.2f", acc1)
    if expected is not None and acc1 < expected - tolerance:
        log.warning(
            "The teacher reaches %.2f%% top-1, far below the %.2f%% its config expects. Is teacher.checkpoint "
            "the right file for this architecture and dataset?", acc1, expected,
        )
    return acc1


def prepare(model: nn.Module, teacher: nn.Module | None, speed: SpeedOptions,
            sync_bn: bool) -> tuple[nn.Module, nn.Module | None]:
    """Memory format, DDP and compilation; the plain modules keep the weights and the checkpoints.

    On several ranks DDP wraps the student only (its gradients are averaged during backward,
    rank 0's BN buffers broadcast each forward); the frozen teacher stays plain, and the
    distiller's extras average their gradients after backward (``distributed.average_gradients``).
    Returns the callables the steps run: (student, teacher).
    """
    speed.prepare_model(model)
    student = model
    if distributed.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        if sync_bn:
            nn.SyncBatchNorm.convert_sync_batchnorm(model)
        student = DistributedDataParallel(model, device_ids=None)
    teacher_fn = None
    if teacher is not None:
        speed.prepare_model(teacher)
        teacher_fn = speed.compiled(teacher)
    return speed.compiled(student), teacher_fn
