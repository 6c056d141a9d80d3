"""Probabilistic knowledge transfer: match the batch's cosine-similarity distributions (RepDistiller).

Each sample's similarities to the batch, shifted into [0, 1] and normalised per row, form a
distribution; the loss is the mean KL-style term between the teacher's and the student's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.models.outputs import ModelOutput


def similarity_distribution(x: Tensor, eps: float) -> Tensor:
    """Row-stochastic matrix of (cos + 1) / 2, the diagonal included.

    Rows are divided by ``norm + eps`` so an all-zero vector stays zero instead of NaN; any NaN
    that non-finite inputs still produce is set to 0, as in the reference.
    """
    x = x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)
    x = torch.where(torch.isnan(x), 0.0, x)
    similarity = (x @ x.t() + 1.0) / 2.0
    return similarity / similarity.sum(dim=1, keepdim=True)


def pkt_loss(feat_s: Tensor, feat_t: Tensor, eps: float = 1e-7) -> Tensor:
    """Mean over all B*B entries of P_t * log((P_t + eps) / (P_s + eps))."""
    p_s = similarity_distribution(as_float32(feat_s).flatten(1), eps)
    p_t = similarity_distribution(as_float32(feat_t).flatten(1), eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


class PKT(Distiller):
    """``weight * pkt_loss`` on the pooled vectors; no module is added."""

    teacher_cacheable = True
    # The similarity distribution over a batch of one is [[1]] for both networks: no loss, no gradient.
    min_batch_size = 2

    def __init__(self, weight: float = 30000.0, eps: float = 1e-7):
        super().__init__()
        self.weight = weight
        self.eps = eps

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        return {"pkt": self.weight * pkt_loss(student.pooled, teacher.pooled.detach(), self.eps)}
