"""RepDistiller's resnetv2.py: ImageNet's ResNet stages behind a stride-1 3x3 stem, no max-pool (ResNet-50 for
32x32 inputs here; its ResNet-18 is mdistiller's Tiny-ImageNet teacher, models/tiny_imagenet/).

Module names and registration order follow RepDistiller's layout, so its checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillbench.models.cifar.resnet import (
    FeaturesAndLogits,
    ResidualStage,
    conv3x3,
    init_conv_bn_,
    make_shortcut,
    run_stages,
)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand to ``4 * planes``, around a residual connection.

    Returns ``(relu(sum), sum)`` like the basic block, so stages can report pre-activations.
    """

    expansion = 4
    closing_bn = "bn3"  # the BN that closes the residual branch, just before the sum and its ReLU

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = make_shortcut(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        preact = out + self.shortcut(x)
        return F.relu(preact), preact


class ResNetV2(nn.Module):
    """Four stages of ``block`` of widths 64-512 (times the block's expansion out), global average pool, linear
    head. ``block`` returns ``(relu(sum), sum)`` and names its closing BN in ``closing_bn``."""

    def __init__(self, block: type[nn.Module], num_blocks: Sequence[int], num_classes: int = 100):
        super().__init__()
        self.conv1 = conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64)
        stages = []
        in_planes = 64
        for planes, blocks, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2), strict=True):
            stages.append(ResidualStage.build(block, in_planes, planes, blocks, stride))
            in_planes = planes * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        init_conv_bn_(self)

    def _stages(self) -> tuple[ResidualStage, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, *self._stages()])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The BN that closes each stage's residual branch, just before the sum and its ReLU."""
        return [getattr(stage[-1], stage[-1].closing_bn) for stage in self._stages()]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | FeaturesAndLogits:
        """Logits, or with ``is_feat`` ``([stem, stage1..stage4, pooled], logits)``.

        ``preact`` swaps the four stage outputs for their pre-ReLU residual sums.
        """
        stem = F.relu(self.bn1(self.conv1(x)))
        x, stage_feats = run_stages(stem, self._stages(), preact)
        pooled = torch.flatten(self.avgpool(x), 1)
        logits = self.linear(pooled)
        if not is_feat:
            return logits
        return [stem, *stage_feats, pooled], logits


MODELS: dict[str, Callable[..., nn.Module]] = {
    "ResNet50": partial(ResNetV2, Bottleneck, (3, 4, 6, 3)),
}
