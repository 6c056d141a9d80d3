"""ShuffleNetV1 (groups=3) for 32x32 inputs, a student in the CIFAR-100 tables.

Module names and registration order follow RepDistiller's layout, so its checkpoints load unchanged.
``channel_shuffle`` and ``ShuffleStage`` are shared with ``shufflenetv2``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` groups so the next grouped conv sees every group.

    Written as a reshape rather than ``F.channel_shuffle`` so that it runs on every backend.
    """
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class ShuffleStage(nn.Sequential):
    """The blocks of one resolution; returns ``(output, pre-ReLU output)`` of the last block.

    The last block must provide ``forward_with_preact``; the pre-activation is what
    ``preact=True`` feature lists carry for the stage.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        *body, last = self
        for block in body:
            x = block(x)
        return last.forward_with_preact(x)


class Bottleneck(nn.Module):
    """1x1 group conv, channel shuffle, depthwise 3x3, 1x1 group conv, plus a shortcut.

    A downsampling block averages the input for its shortcut and concatenates it rather than
    adding it, so its branch only produces ``out_channels - in_channels`` channels.
    """

    def __init__(
        self, in_channels: int, out_channels: int, downsample: bool, groups: int, first_groups: int
    ) -> None:
        super().__init__()
        self.downsample = downsample
        branch_channels = out_channels - in_channels if downsample else out_channels
        mid = branch_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, 2 if downsample else 1, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch_channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_channels)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if downsample else nn.Identity()

    def forward_with_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.conv1.groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.shortcut(x)
        preact = torch.cat([out, shortcut], 1) if self.downsample else out + shortcut
        return F.relu(preact), preact

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_preact(x)[0]


class ShuffleNetV1(nn.Module):
    """ShuffleNetV1 with a 1x1 stem and no max-pool, so the three stages run at 16, 8 and 4 pixels.

    PyTorch's default initialisation is kept on purpose: the published students use no other.
    """

    def __init__(
        self,
        num_classes: int = 100,
        stage_channels: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
    ) -> None:
        super().__init__()
        stem_channels = 24
        self.conv1 = nn.Conv2d(3, stem_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)

        in_channels = stem_channels
        stages = []
        for out_channels, n in zip(stage_channels, num_blocks, strict=True):
            blocks = []
            for i in range(n):
                # The stem has too few channels to split into groups, so the network's very
                # first pointwise conv is dense.
                first_groups = 1 if not stages and i == 0 else groups
                blocks.append(Bottleneck(in_channels, out_channels, i == 0, groups, first_groups))
                in_channels = out_channels
            stages.append(ShuffleStage(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(stage_channels[-1], num_classes)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        raise NotImplementedError("ShuffleNetV1 is not supported as an OFD (Overhaul) teacher")

    def forward(
        self, x: Tensor, is_feat: bool = False, preact: bool = False
    ) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` with ``is_feat``.

        Features are the stem output, the three stage outputs (their pre-ReLU sums with
        ``preact``) and the pooled vector.
        """
        out = F.relu(self.bn1(self.conv1(x)))
        feats = [out]
        for stage in (self.layer1, self.layer2, self.layer3):
            out, stage_preact = stage(out)
            feats.append(stage_preact if preact else out)
        # A fixed 4x4 window: global pooling for the 4x4 map a 32x32 input leaves.
        out = F.avg_pool2d(out, 4).flatten(1)
        feats.append(out)
        logits = self.linear(out)
        return (feats, logits) if is_feat else logits


MODELS: dict[str, Callable[..., nn.Module]] = {"ShuffleV1": ShuffleNetV1}
