"""mdistiller's Tiny-ImageNet MobileNetV2 (``mdistiller/models/cifar/mv2_tinyimagenet.py`` @ a08d46f).

Not the CIFAR zoo's half-width ``MobileNetV2``: full width, a 1x1 stem with padding 1 (64x64 -> 66x66),
strides 2 in stages 2-4 only, and a 1x1 convolution as the classifier. State-dict layout:
``pre.{0,1}.*`` (conv, BN); ``stage1.residual.{0..7}.*`` and ``stage{2..6}.<i>.residual.{0..7}.*`` (1x1 expand
conv, BN, ReLU6, 3x3 depthwise conv, BN, ReLU6, 1x1 project conv, BN; every conv with a bias);
``stage7.residual.*``; ``conv1.{0,1}.*`` (1x1 to 1280, BN); ``conv2.{weight,bias}`` (1x1 to the classes).
PyTorch's default initialisation, as the reference sets none.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

# (blocks, out channels, first stride) of stages 2-6; stage 1 is one t=1 block 32->16, stage 7 one block 160->320.
_STAGES = ((2, 24, 2), (3, 32, 2), (4, 64, 2), (3, 96, 1), (3, 160, 1))
_EXPANSION = 6


class LinearBottleNeck(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, no activation); a residual when shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, t: int = _EXPANSION):
        super().__init__()
        hidden = in_channels * t
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1), nn.BatchNorm2d(out_channels),
        )
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.residual(x)
        return out + x if self.use_residual else out


def _stage(blocks: int, in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    layers = [LinearBottleNeck(in_channels, out_channels, stride)]
    layers += [LinearBottleNeck(out_channels, out_channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class MobileNetV2TinyImageNet(nn.Module):
    """Features as mdistiller returns them: stem, stages 2, 3 and 4, the 1280-channel head, then the pooled vector."""

    def __init__(self, num_classes: int = 200):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(3, 32, 1, padding=1), nn.BatchNorm2d(32), nn.ReLU6(inplace=True))
        self.stage1 = LinearBottleNeck(32, 16, 1, t=1)
        in_channels = 16
        for i, (blocks, out_channels, stride) in enumerate(_STAGES, start=2):
            setattr(self, f"stage{i}", _stage(blocks, in_channels, out_channels, stride))
            in_channels = out_channels
        self.stage7 = LinearBottleNeck(160, 320, 1)
        self.conv1 = nn.Sequential(nn.Conv2d(320, 1280, 1), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True))
        self.conv2 = nn.Conv2d(1280, num_classes, 1)

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` with ``is_feat``; ``preact`` is accepted and ignored (linear outputs)."""
        del preact
        stem = self.pre(x)
        f1 = self.stage2(self.stage1(stem))
        f2 = self.stage3(f1)
        f3 = self.stage4(f2)
        head = self.conv1(self.stage7(self.stage6(self.stage5(f3))))
        pooled = F.adaptive_avg_pool2d(head, 1)
        logits = self.conv2(pooled).flatten(1)
        return ([stem, f1, f2, f3, head, pooled.flatten(1)], logits) if is_feat else logits


MODELS: dict[str, Callable[..., nn.Module]] = {"MobileNetV2_tinyimagenet": MobileNetV2TinyImageNet}
