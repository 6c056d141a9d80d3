"""Decoupled knowledge distillation (Zhao et al., CVPR 2022): KD split into a target-class and a
non-target-class part, weighted separately."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput

# Subtracted from the target logit after the division by T, which pushes its softmax weight to 0.
GT_MASK_OFFSET = 1000.0


def _binary(probs: Tensor, gt_mask: Tensor) -> Tensor:
    """[p_target, sum of the other classes' p] per row, the latter summed rather than taken as 1 - p_target."""
    target = (probs * gt_mask).sum(dim=1, keepdim=True)
    others = (probs * ~gt_mask).sum(dim=1, keepdim=True)
    return torch.cat([target, others], dim=1)


def tckd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """KL between the teacher's and the student's binary target/non-target distributions, times T².

    The log is taken directly on the student's binary probabilities, without an epsilon, so a
    student whose target probability underflows to 0 gives an infinite loss, as in the reference.
    """
    s, t = as_float32(student_logits), as_float32(teacher_logits)
    gt_mask = F.one_hot(labels, s.shape[1]).bool()
    p_student = _binary(F.softmax(s / temperature, dim=1), gt_mask)
    p_teacher = _binary(F.softmax(t / temperature, dim=1), gt_mask)
    return F.kl_div(torch.log(p_student), p_teacher, reduction="sum") * temperature**2 / s.shape[0]


def nckd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """KL between the teacher's and the student's distributions over the non-target classes, times T².

    The target class is removed by subtracting ``GT_MASK_OFFSET`` from its logit after dividing by T.
    """
    s, t = as_float32(student_logits), as_float32(teacher_logits)
    offset = GT_MASK_OFFSET * F.one_hot(labels, s.shape[1]).to(s.dtype)
    log_p_student = F.log_softmax(s / temperature - offset, dim=1)
    p_teacher = F.softmax(t / temperature - offset, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="sum") * temperature**2 / s.shape[0]


def dkd_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float, beta: float, temperature: float
) -> Tensor:
    """``alpha * TCKD + beta * NCKD`` (both summed over classes, averaged over the batch, times T²)."""
    return alpha * tckd_loss(student_logits, teacher_logits, labels, temperature) + beta * nckd_loss(
        student_logits, teacher_logits, labels, temperature
    )


class DKD(Distiller):
    """``min(epoch / warmup, 1) * (alpha * TCKD + beta * NCKD)``, returned as the terms ``tckd`` and ``nckd``.

    The linear warm-up uses the 1-based epoch, so the first epoch already runs at ``1 / warmup``.
    """

    teacher_cacheable = True

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, warmup: int = 20):
        super().__init__()
        if warmup <= 0:
            raise ConfigError(f"DKD warmup must be a positive number of epochs, got {warmup}.")
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.warmup = warmup

    def warmup_factor(self, epoch: int) -> float:
        return min(epoch / self.warmup, 1.0)

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        scale = self.warmup_factor(epoch)
        args = (student.logits, teacher.logits, batch.labels, self.temperature)
        return {
            "tckd": scale * self.alpha * tckd_loss(*args),
            "nckd": scale * self.beta * nckd_loss(*args),
        }
