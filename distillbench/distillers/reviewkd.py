"""ReviewKD (Chen et al., CVPR 2021) as mdistiller implements it (``mdistiller/distillers/ReviewKD.py``).

The student's features are reviewed deepest first: each level's map goes through an attention-based
fusion module (ABF) that mixes it with the fused result of the level below, and the level's output
is compared with the teacher's map of the same level by the hierarchical context loss (HCL).

Feature mapping (mdistiller reads dicts, distillbench reads ``ModelOutput.feats``, whose layout is
mdistiller's ``feats + [pooled_feat]``):

* Levels. mdistiller compares ``teacher preact_feats[1:] + [pooled]`` (every teacher tap but the
  stem) with as many student levels, the deepest ``len(IN_CHANNELS)`` of ``feats + [pooled]``
  (``zip`` drops the rest). Here the number of levels is ``len(teacher.feats) - 1`` and the student
  gives its last that many features. Channels and spatial sizes (mdistiller's IN_CHANNELS,
  OUT_CHANNELS, SHAPES, OUT_SHAPES) come from the dry forward; for every CIFAR pair of the tables
  they equal the lists of mdistiller's config (resnet32x4 -> resnet8x4) and of the authors'
  ``CIFAR-100/model/reviewkd.py::build_review_kd`` (the others).
* Activations. mdistiller's teacher always gives pre-activation maps, its CIFAR student
  post-activation ones (``STU_PREACT: False``). The trainer taps one activation point for both
  networks (``Distiller.preact``), so with ``preact=True`` the student's post-activation maps are
  recovered as ``relu(preact)`` when ``student_relu=True``: exact for resnet*, vgg* and ShuffleV1
  (their stages end in a ReLU), for ShuffleV2 up to a channel permutation that the ABF's 1x1 conv
  absorbs. MobileNetV2 has no pre-activation taps (its maps are mdistiller's, as tapped:
  ``student_relu=False``); a WRN's pre-activation tap is the next block's BatchNorm of its map,
  a per-channel affine image that the ABF's 1x1 conv + BatchNorm absorbs (``student_relu=False``).
  The ImageNet networks have no pre-activation taps (torchvision applies the last ReLU inside the
  block): their cells run with ``preact=False``, post-activation maps on both sides, where
  mdistiller's ImageNet configs read pre-activation maps on both (``STU_PREACT: True``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput


def hcl_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], levels: Sequence[int] = (4, 2, 1)) -> Tensor:
    """Hierarchical context loss, summed over the pairs of maps.

    Per pair: the MSE of the maps plus, for each pooling size in ``levels`` smaller than the map's
    height, the MSE of both maps adaptive-average-pooled to that size, weighted 1/2, 1/4, ...;
    the sum is divided by the sum of the weights (1 for the full map).
    """
    total = None
    for f_s, f_t in zip(student, teacher, strict=True):
        f_s, f_t = as_float32(f_s), as_float32(f_t)
        loss = F.mse_loss(f_s, f_t)
        weight, norm = 1.0, 1.0
        for size in levels:
            if size >= f_s.shape[2]:  # mdistiller compares with the height; the maps are square
                continue
            weight /= 2.0
            pooled_s, pooled_t = F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size)
            loss = loss + F.mse_loss(pooled_s, pooled_t) * weight
            norm += weight
        loss = loss / norm
        total = loss if total is None else total + loss
    if total is None:
        raise ValueError("hcl_loss needs at least one pair of maps.")
    return total


class ABF(nn.Module):
    """Attention-based fusion of one student level with the fused map of the level below.

    ``conv1`` (1x1 conv + BN) maps the level to ``mid_channels``; when ``fuse``, the deeper fused map
    is resized (nearest) to this level's size and the two are mixed with per-pixel weights from a
    1x1 conv + sigmoid. The mix is resized (nearest) to the teacher's size if it differs, and
    ``conv2`` (3x3 conv + BN) maps it to the teacher's channels. Returns (output, mix); the mix is
    the next, shallower level's residual. Submodule names are mdistiller's.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, out_size: tuple[int, int],
                 fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = (nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid())
                         if fuse else None)
        self.out_size = tuple(out_size)
        # mdistiller's ReviewKD.py, ABF.__init__: kaiming-uniform with a=1 for both convs.
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("A fusing ABF needs the fused map of the level below.")
            residual = F.interpolate(residual, size=tuple(x.shape[-2:]), mode="nearest")
            att = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        if tuple(x.shape[-2:]) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="nearest")
        return self.conv2(x), x


def _as_map(feat: Tensor) -> Tensor:
    """A pooled vector (N, C) as the (N, C, 1, 1) map mdistiller feeds the deepest ABF."""
    return feat[:, :, None, None] if feat.dim() == 2 else feat


def _map_shape(feat: Tensor) -> Size:
    return _as_map(feat).shape


class ReviewKD(Distiller):
    """``weight * min(epoch / warmup_epochs, 1) * HCL(ABF-reviewed student levels, teacher levels)``.

    The ABFs are built in ``setup`` from the probed shapes and trained with the student (weight decay
    included); their BatchNorms follow the distiller's train/eval mode. The mid width is
    ``min(max_mid_channels, student pooled width)``; mdistiller hard-codes the cap to 512 and ignores
    its ``MAX_MID_CHANNEL`` key (ReviewKD.py, ``__init__``).
    """

    def __init__(self, weight: float = 5.0, warmup_epochs: float = 20, hcl_levels: Sequence[int] = (4, 2, 1),
                 max_mid_channels: int = 512, preact: bool = True, student_relu: bool = True):
        super().__init__()
        if warmup_epochs <= 0:
            raise ConfigError(f"ReviewKD warmup_epochs must be a positive number of epochs, got {warmup_epochs}.")
        self.weight = weight
        self.warmup_epochs = warmup_epochs
        self.hcl_levels = tuple(hcl_levels)
        self.max_mid_channels = max_mid_channels
        self.preact = preact
        self.student_relu = student_relu
        self.abfs: nn.ModuleList | None = None

    def _levels(self, student: ModelOutput, teacher: ModelOutput) -> tuple[list[Tensor], list[Tensor]]:
        """The student's and the teacher's features per level, shallowest first, pooled vector last."""
        n = len(teacher.feats) - 1
        if n < 1 or len(student.feats) < n:
            raise ConfigError(
                f"ReviewKD compares every teacher feature but the stem ({n}) with as many of the student's deepest "
                f"features, but the student has {len(student.feats)}."
            )
        for who, feats in (("student", student.feats[-n:]), ("teacher", teacher.feats[1:])):
            if any(f.dim() != 4 for f in feats[:-1]) or feats[-1].dim() not in (2, 4):
                raise ConfigError(f"ReviewKD needs the {who}'s stage maps followed by its pooled feature, got shapes "
                                  f"{[tuple(f.shape) for f in feats]}.")
        return list(student.feats[-n:]), list(teacher.feats[1:])

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        s_feats, t_feats = self._levels(student, teacher)
        s_shapes, t_shapes = [_map_shape(f) for f in s_feats], [_map_shape(f) for f in t_feats]
        mid = min(self.max_mid_channels, s_shapes[-1][1])
        last = len(s_shapes) - 1
        self.abfs = nn.ModuleList(
            ABF(s[1], mid, t[1], (t[2], t[3]), fuse=level < last)
            for level, (s, t) in enumerate(zip(s_shapes, t_shapes, strict=True))
        ).to(s_feats[0].device)

    def review(self, student_feats: Sequence[Tensor]) -> list[Tensor]:
        """The ABF outputs per level, shallowest first, for the student's features of ``_levels``."""
        if self.abfs is None:
            raise RuntimeError("ReviewKD.setup must run before the first forward: it builds the ABFs.")
        maps = [_as_map(f) for f in student_feats]
        if self.student_relu:
            maps = [F.relu(m) if f.dim() == 4 else m for m, f in zip(maps, student_feats, strict=True)]
        out, residual = self.abfs[-1](maps[-1])
        outputs = [out]
        for level in range(len(maps) - 2, -1, -1):
            out, residual = self.abfs[level](maps[level], residual)
            outputs.insert(0, out)
        return outputs

    def warmup_factor(self, epoch: int) -> float:
        # mdistiller: min(epoch / WARMUP_EPOCHS, 1.0) with 1-based epochs (ReviewKD.py, forward_train).
        return min(epoch / self.warmup_epochs, 1.0)

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        s_feats, t_feats = self._levels(student, teacher)
        reviewed = self.review(s_feats)
        loss = hcl_loss(reviewed, [_as_map(f) for f in t_feats], self.hcl_levels)
        return {"reviewkd": self.weight * self.warmup_factor(epoch) * loss}
