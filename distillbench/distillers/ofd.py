"""OFD, "A Comprehensive Overhaul of Feature Distillation" (Heo et al., ICCV 2019), as mdistiller runs it.

The student's pre-ReLU stage maps go through a 1x1 conv + BN connector to the teacher's widths and are
compared with the teacher's pre-ReLU maps by a partial L2: where the teacher is negative only the part
above a per-channel margin counts, because a ReLU would erase the rest anyway. The margin is the
expected value of the teacher's negative pre-activations, read off the affine parameters of the BN
that produces them (mdistiller/distillers/OFD.py @ a08d46f, lines 90-109).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput

# OFD.py:98: below this probability of a negative pre-activation the margin falls back to -3 sigma.
MIN_NEGATIVE_MASS = 0.001


def bn_margins(weight: Tensor, bias: Tensor) -> Tensor:
    """E[x | x < 0] for x ~ N(bias, weight^2) per channel, or ``-3 |weight|`` where x < 0 is too rare.

    Computed in float64 like the reference's Python floats (OFD.py:95-107), returned as float32.
    """
    s, m = weight.detach().double().abs(), bias.detach().double()
    neg_mass = torch.special.ndtr(-m / s)
    pdf = torch.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi)
    margin = torch.where(neg_mass > MIN_NEGATIVE_MASS, -s * pdf / neg_mass + m, -3 * s)
    return margin.float()


def partial_l2(f_s: Tensor, f_t: Tensor, margin: Tensor) -> Tensor:
    """OFD's distance (OFD.py:11-19), summed over C, H, W and averaged over the batch.

    Where the teacher is positive: plain squared error. Where it is negative: the student is only
    pulled down to ``max(teacher, margin)`` when it lies above it, never pushed up.
    """
    f_s, f_t = as_float32(f_s), as_float32(f_t)
    margin = margin.to(f_s)
    above_margin = (f_s > margin) & (f_t <= margin)
    above_target = (f_s > f_t) & (f_t > margin) & (f_t <= 0)
    loss = (f_s - margin).pow(2) * above_margin + (f_s - f_t).pow(2) * above_target + (f_s - f_t).pow(2) * (f_t > 0)
    return loss.mean(dim=0).sum()


def connector(s_channels: int, t_channels: int, kernel_size: int) -> nn.Sequential:
    """Conv (no bias, He-normal over fan-out) then BN, mapping a student stage to the teacher's width
    (OFD.py:41-60); keys ``0.weight``, ``1.weight``, ``1.bias`` like the reference's."""
    conv = nn.Conv2d(s_channels, t_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel_size * kernel_size * t_channels)))
    return nn.Sequential(conv, nn.BatchNorm2d(t_channels))


class OFD(Distiller):
    """``weight * sum_i partial_l2(connector_i(student_i), pool(teacher_i), margin_i) / 2^(n-1-i)``.

    Stages are the pre-ReLU maps ``feats[1:-1]`` of both networks (mdistiller's ``preact_feats[1:]``);
    when one network has more, the last ones pair up (OFD.py:163-165) and the deepest stage weighs most.
    The teacher runs in train mode, as mdistiller's OFD.train() and the authors' training loop leave it.
    """

    preact = True
    teacher_train_mode = True

    def __init__(self, weight: float = 1e-3, kernel_size: int = 1):
        super().__init__()
        self.weight = weight
        self.kernel_size = kernel_size
        self.connectors = nn.ModuleList()
        self.num_stages = 0

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        s_maps, t_maps = student.feats[1:-1], teacher.feats[1:-1]
        n = min(len(s_maps), len(t_maps))
        if n == 0:
            raise ConfigError("OFD needs pre-ReLU stage maps in feats[1:-1] of both networks; one of them has none.")
        s_maps, t_maps = s_maps[-n:], t_maps[-n:]
        for i, (f_s, f_t) in enumerate(zip(s_maps, t_maps, strict=True)):
            if f_s.dim() != 4 or f_t.dim() != 4:
                raise ConfigError(
                    f"OFD pairs spatial maps, but stage {i} has shapes {tuple(f_s.shape[1:])} "
                    f"(student) and {tuple(f_t.shape[1:])} (teacher)."
                )
        bns = self._teacher_bns(teacher, len(teacher.feats[1:-1]))[-n:]
        device = s_maps[0].device
        self.connectors = nn.ModuleList(
            connector(f_s.shape[1], f_t.shape[1], self.kernel_size) for f_s, f_t in zip(s_maps, t_maps, strict=True)
        ).to(device)
        for i, (bn, f_t) in enumerate(zip(bns, t_maps, strict=True)):
            if bn.num_features != f_t.shape[1]:
                raise ConfigError(
                    f"OFD's margin for teacher stage {i} comes from a BN of {bn.num_features} "
                    f"channels, but the stage map has {f_t.shape[1]}."
                )
            self.register_buffer(f"margin{i}", bn_margins(bn.weight, bn.bias).view(1, -1, 1, 1).to(device))
        self.num_stages = n

    @staticmethod
    def _teacher_bns(teacher: ModelOutput, num_stages: int) -> list[nn.BatchNorm2d]:
        if teacher.bn_before_relu is None:
            raise ConfigError(
                "OFD computes its margins from the BN layers before the teacher's stage ReLUs, and "
                "this teacher does not expose them (get_bn_before_relu)."
            )
        try:
            bns = list(teacher.bn_before_relu())
        except NotImplementedError as err:
            raise ConfigError(f"OFD cannot use this teacher: {err}.") from None
        if len(bns) != num_stages:
            raise ConfigError(
                f"OFD needs one BN before ReLU per teacher stage: the teacher exposes {len(bns)} "
                f"for {num_stages} stage maps."
            )
        return bns

    def margins(self) -> list[Tensor]:
        return [getattr(self, f"margin{i}") for i in range(self.num_stages)]

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        if self.num_stages == 0:
            raise RuntimeError("OFD.setup must run before the first forward: it builds connectors and margins.")
        n = self.num_stages
        s_maps, t_maps = student.feats[1:-1][-n:], teacher.feats[1:-1][-n:]
        total = 0.0
        for i, (conn, f_s, f_t, margin) in enumerate(zip(self.connectors, s_maps, t_maps, self.margins(), strict=True)):
            f_s = conn(f_s)
            f_t = F.adaptive_avg_pool2d(as_float32(f_t), f_s.shape[-2:]).detach()
            total = total + partial_l2(f_s, f_t, margin) / 2 ** (n - i - 1)
        return {"ofd": self.weight * total}
