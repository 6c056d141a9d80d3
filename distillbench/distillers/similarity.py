"""Similarity-preserving KD (Tung & Mori): match the batch's pairwise-similarity pattern, which
needs no channel or size agreement between the networks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.models.outputs import ModelOutput


def similarity_matrix(f: Tensor) -> Tensor:
    """B x B Gram matrix of the flattened features, each row divided by its L2 norm (eps 1e-12)."""
    flat = f.flatten(1)
    return F.normalize(flat @ flat.T, dim=1)


def sp_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Squared Frobenius distance between the row-normalised similarity matrices, divided by B²."""
    batch = f_s.shape[0]
    diff = similarity_matrix(as_float32(f_t)) - similarity_matrix(as_float32(f_s))
    return diff.pow(2).sum() / batch**2


class SP(Distiller):
    """``weight * sp_loss`` on ``feats[-2]``, the last spatial map (not the pooled vector)."""

    # The batch's similarity matrix of one sample is [[1]] for both networks: no loss, no gradient.
    min_batch_size = 2

    def __init__(self, weight: float = 3000.0):
        super().__init__()
        self.weight = weight

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        return {"sp": self.weight * sp_loss(student.feats[-2], teacher.feats[-2])}
