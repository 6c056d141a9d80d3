"""Attention transfer (Zagoruyko & Komodakis): match normalised spatial energy maps stage by stage."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput


def pool_to_smaller(f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool whichever map is taller down to the other's height, as a square.

    RepDistiller's AT and NST compare maps of different resolutions this way; only heights are
    compared, so non-square maps of different sizes cannot be paired (see ``check_stage_pairs``).
    """
    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        f_s = F.adaptive_avg_pool2d(f_s, (t_h, t_h))
    elif s_h < t_h:
        f_t = F.adaptive_avg_pool2d(f_t, (s_h, s_h))
    return f_s, f_t


def check_stage_pairs(method: str, student: ModelOutput, teacher: ModelOutput) -> None:
    """Fail at setup, not mid-training, when the stage maps ``feats[1:-1]`` cannot be paired.

    Stages pair by position and the longer list is cut to the shorter one (the reference zips
    them), so a teacher with an extra stage is fine. A pair whose spatial sizes still differ
    after ``pool_to_smaller`` would crash the reference's loss on the first batch.
    """
    pairs = list(zip(student.feats[1:-1], teacher.feats[1:-1], strict=False))
    if not pairs:
        raise ConfigError(f"{method} needs stage maps in feats[1:-1] of both networks; one of them has none.")
    for i, (f_s, f_t) in enumerate(pairs, start=1):
        if f_s.dim() != 4 or f_t.dim() != 4:
            raise ConfigError(
                f"{method} pairs spatial maps, but student feats[{i}] has shape {tuple(f_s.shape[1:])} and "
                f"teacher feats[{i}] has shape {tuple(f_t.shape[1:])}."
            )
        p_s, p_t = pool_to_smaller(f_s, f_t)
        if p_s.shape[2:] != p_t.shape[2:]:
            raise ConfigError(
                f"{method} cannot pair student feats[{i}] ({tuple(f_s.shape[1:])}) with teacher feats[{i}] "
                f"({tuple(f_t.shape[1:])}): after pooling the taller map to a square of the other's height the "
                f"spatial sizes are {tuple(p_s.shape[2:])} and {tuple(p_t.shape[2:])}."
            )


def attention_map(f: Tensor, p: float) -> Tensor:
    """Channel mean of ``f**p``, flattened over H*W and L2-normalised per sample (eps 1e-12)."""
    return F.normalize(f.pow(p).mean(1).flatten(1), dim=1)


def at_loss(f_s: Tensor, f_t: Tensor, p: float = 2.0) -> Tensor:
    """Mean over batch and positions of the squared attention-map difference.

    The mean (not the paper's norm) brings a 1/(H*W) factor per stage; the CIFAR weight of 1000
    was tuned with it.
    """
    f_s, f_t = pool_to_smaller(as_float32(f_s), as_float32(f_t))
    return (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()


class AT(Distiller):
    """``weight * sum over stages of at_loss`` on the stage maps ``feats[1:-1]`` (stem and pooled vector excluded)."""

    def __init__(self, weight: float = 1000.0, p: float = 2.0):
        super().__init__()
        self.weight = weight
        self.p = p

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        check_stage_pairs("AT", student, teacher)

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        pairs = zip(student.feats[1:-1], teacher.feats[1:-1], strict=False)
        return {"at": self.weight * sum(at_loss(f_s, f_t, self.p) for f_s, f_t in pairs)}
