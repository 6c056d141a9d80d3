"""Neuron selectivity transfer (Huang & Wang): an MMD with a squared polynomial kernel between
the spatial activation patterns of the two networks' channels, stage by stage."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distillbench.distillers.attention import check_stage_pairs, pool_to_smaller
from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.models.outputs import ModelOutput


def _mean_poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    """Mean over the batch and all channel pairs of ``(a_i . b_j)**2``; a batched matmul keeps
    memory at B x C_a x C_b instead of B x C_a x C_b x H*W."""
    return (a @ b.transpose(1, 2)).pow(2).mean()


def nst_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """MMD² between the channels' L2-normalised spatial vectors (eps 1e-12), kernel k(x, y) = (x.y)².

    Channel counts may differ; the teacher-teacher term is a constant kept (detached) so the
    value equals the full MMD.
    """
    f_s, f_t = pool_to_smaller(as_float32(f_s), as_float32(f_t))
    s = F.normalize(f_s.flatten(2), dim=2)
    t = F.normalize(f_t.flatten(2), dim=2)
    return _mean_poly_kernel(t, t).detach() + _mean_poly_kernel(s, s) - 2 * _mean_poly_kernel(s, t)


class NST(Distiller):
    """``weight * sum over stages of nst_loss`` on the stage maps ``feats[1:-1]``, paired by position."""

    def __init__(self, weight: float = 50.0):
        super().__init__()
        self.weight = weight

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        check_stage_pairs("NST", student, teacher)

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        pairs = zip(student.feats[1:-1], teacher.feats[1:-1], strict=False)
        return {"nst": self.weight * sum(nst_loss(f_s, f_t) for f_s, f_t in pairs)}
