"""Hinton et al.'s knowledge distillation: KL between temperature-softened distributions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.models.outputs import ModelOutput


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(z_t/T) || softmax(z_s/T)), summed over classes, averaged over the batch, times T².

    The T² factor keeps the gradient scale independent of T; averaging over classes as well
    (``reduction='mean'``) would make the term 100x smaller on CIFAR-100.
    """
    log_p_student = F.log_softmax(as_float32(student_logits) / temperature, dim=1)
    p_teacher = F.softmax(as_float32(teacher_logits) / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature**2


class KD(Distiller):
    """``weight * kd_loss``; the cross-entropy weight lives beside it in the distiller config."""

    teacher_cacheable = True

    def __init__(self, weight: float = 0.9, temperature: float = 4.0):
        super().__init__()
        self.weight = weight
        self.temperature = temperature

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        return {"kd": self.weight * kd_loss(student.logits, teacher.logits, self.temperature)}
