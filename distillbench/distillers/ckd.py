"""Contrastive knowledge distillation from a sample-wise perspective (Zhu et al.): each teacher logit
vector must pick out its own sample's student logit vector among the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.models.outputs import ModelOutput


def ckd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Cross-entropy over the B x B teacher-by-student cosine similarities of the raw logits / tau.

    Row i is teacher sample i against every student sample j; the target is j = i, so the same
    sample's logits are pulled together and other samples' pushed apart. Only this
    teacher-anchored direction is used. Autocast is switched off so that the similarity matrix
    is not recomputed in half precision.
    """
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        s = F.normalize(as_float32(student_logits), dim=1)
        t = F.normalize(as_float32(teacher_logits), dim=1)
        similarity = t @ s.T
        targets = torch.arange(similarity.shape[0], device=similarity.device)
        return F.cross_entropy(similarity / temperature, targets)


class CKD(Distiller):
    """``weight * ckd_loss``; no KD term, the cross-entropy weight lives in the distiller config."""

    teacher_cacheable = True
    # The other samples of the batch are the negatives: with one sample the cross-entropy over one column is 0.
    min_batch_size = 2

    def __init__(self, weight: float = 100.0, temperature: float = 1.0):
        super().__init__()
        self.weight = weight
        self.temperature = temperature

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        return {"ckd": self.weight * ckd_loss(student.logits, teacher.logits, self.temperature)}
