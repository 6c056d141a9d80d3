"""Variational information distillation, as RepDistiller trains it.

Each stage pair gets a Gaussian whose mean a 1x1-conv regressor predicts from the student map
and whose per-channel variance is a trainable softplus parameter; the loss is the negative log
likelihood of the teacher map. RepDistiller puts the variance in the optimiser (mdistiller does
not), so it is a registered parameter here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.models.outputs import ModelOutput


class VariationalHead(nn.Module):
    """Mean regressor and log-variance of one stage pair."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        init_var: float,
        eps: float,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.eps = eps
        self.regressor = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False, **factory),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 1, bias=False, **factory),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 1, bias=False, **factory),
        )
        # Inverse softplus, so that softplus(log_scale) + eps starts at init_var.
        self.log_scale = nn.Parameter(torch.full((out_channels,), math.log(math.expm1(init_var - eps)), **factory))

    def forward(self, feat_s: Tensor, feat_t: Tensor) -> Tensor:
        """Mean over every element of the Gaussian negative log likelihood (without the log 2pi)."""
        h_s, h_t = feat_s.shape[2], feat_t.shape[2]
        if h_s > h_t:
            feat_s = F.adaptive_avg_pool2d(feat_s, feat_t.shape[2:])
        elif h_s < h_t:
            feat_t = F.adaptive_avg_pool2d(feat_t, feat_s.shape[2:])
        mean = as_float32(self.regressor(feat_s))
        var = (F.softplus(as_float32(self.log_scale)) + self.eps).view(1, -1, 1, 1)
        return (0.5 * ((mean - as_float32(feat_t)) ** 2 / var + var.log())).mean()


class VID(Distiller):
    """``weight * sum over stage pairs`` of the VID likelihood; pairs are feats[1:-1], zipped."""

    def __init__(self, weight: float = 1.0, init_var: float = 5.0, eps: float = 1e-5):
        super().__init__()
        self.weight = weight
        self.init_var = init_var
        self.eps = eps
        self.heads = nn.ModuleList()

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        # Networks with different stage counts pair their first stages only, as the reference's zip does.
        self.heads = nn.ModuleList(
            VariationalHead(f_s.shape[1], f_t.shape[1], self.init_var, self.eps, f_s.device, f_s.dtype)
            for f_s, f_t in zip(student.feats[1:-1], teacher.feats[1:-1], strict=False)
        )

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        if not self.heads:
            raise RuntimeError("VID.setup must run before the first forward: it builds one head per stage pair.")
        pairs = zip(student.feats[1:-1], teacher.feats[1:-1], self.heads, strict=False)
        return {"vid": self.weight * sum(head(f_s, f_t.detach()) for f_s, f_t, head in pairs)}
