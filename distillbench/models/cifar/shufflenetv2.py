"""ShuffleNetV2 (1x width) for 32x32 inputs, a student in the CIFAR-100 tables.

Module names and registration order follow RepDistiller's layout, so its checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from distillbench.models.cifar.shufflenetv1 import ShuffleStage, channel_shuffle


class BasicBlock(nn.Module):
    """Keeps half the channels untouched and runs the other half through 1x1, depthwise 3x3, 1x1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward_with_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Output and pre-activation: the untouched half joined to the branch before its ReLU.

        Unlike the output, the pre-activation is not channel-shuffled; consumers of ``preact``
        features are written against that unshuffled channel order.
        """
        kept, active = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(active)))
        out = self.bn2(self.conv2(out))
        branch = self.bn3(self.conv3(out))
        out = channel_shuffle(torch.cat([kept, F.relu(branch)], 1), 2)
        return out, torch.cat([kept, branch], 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_preact(x)[0]


class DownBlock(nn.Module):
    """Halves the resolution with two stride-2 branches over the full input, each giving half the output."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half = out_channels // 2
        # Left branch: depthwise 3x3 (stride 2), then 1x1.
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        # Right branch: 1x1, depthwise 3x3 (stride 2), 1x1.
        self.conv3 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        self.conv4 = nn.Conv2d(half, half, 3, 2, 1, groups=half, bias=False)
        self.bn4 = nn.BatchNorm2d(half)
        self.conv5 = nn.Conv2d(half, half, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 with a 1x1 stem and no max-pool, so the three stages run at 16, 8 and 4 pixels.

    Each stage is a ``DownBlock`` followed by ``num_blocks`` basic blocks. PyTorch's default
    initialisation is kept on purpose: the published students use no other.
    """

    def __init__(
        self,
        num_classes: int = 100,
        stage_channels: tuple[int, int, int] = (116, 232, 464),
        num_blocks: tuple[int, int, int] = (3, 7, 3),
        head_channels: int = 1024,
    ) -> None:
        super().__init__()
        stem_channels = 24
        self.conv1 = nn.Conv2d(3, stem_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)

        in_channels = stem_channels
        stages = []
        for out_channels, n in zip(stage_channels, num_blocks, strict=True):
            blocks = [DownBlock(in_channels, out_channels)] + [BasicBlock(out_channels) for _ in range(n)]
            stages.append(ShuffleStage(*blocks))
            in_channels = out_channels
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(stage_channels[-1], head_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(head_channels)
        self.linear = nn.Linear(head_channels, num_classes)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        raise NotImplementedError("ShuffleNetV2 is not supported as an OFD (Overhaul) teacher")

    def forward(
        self, x: Tensor, is_feat: bool = False, preact: bool = False
    ) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` with ``is_feat``.

        Features are the stem output, the three stage outputs (see
        ``BasicBlock.forward_with_preact`` for what ``preact`` swaps in) and the pooled vector
        after the 1x1 head conv.
        """
        out = F.relu(self.bn1(self.conv1(x)))
        feats = [out]
        for stage in (self.layer1, self.layer2, self.layer3):
            out, stage_preact = stage(out)
            feats.append(stage_preact if preact else out)
        out = self.pool(F.relu(self.bn2(self.conv2(out))))
        feats.append(out)
        logits = self.linear(out)
        return (feats, logits) if is_feat else logits

    def pool(self, out: Tensor) -> Tensor:
        """A fixed 4x4 window: global pooling for the 4x4 map a 32x32 input leaves (RepDistiller's head)."""
        return F.avg_pool2d(out, 4).flatten(1)


MODELS: dict[str, Callable[..., nn.Module]] = {"ShuffleV2": ShuffleNetV2}
