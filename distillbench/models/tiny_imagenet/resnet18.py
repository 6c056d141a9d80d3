"""ResNet-18 with a 3x3 stride-1 stem and no max-pool: mdistiller's Tiny-ImageNet teacher.

State-dict layout (mdistiller ``mdistiller/models/cifar/resnetv2.py`` @ a08d46f, also RepDistiller's
``models/resnetv2.py``): ``conv1.weight``, ``bn1.*``; ``layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}.*`` with a
projection ``layer{2,3,4}.0.shortcut.{0.weight,1.*}`` where stride or width changes; ``linear.{weight,bias}``.
Global average pooling makes it take any input size (64x64 on Tiny-ImageNet, a 8x8 map before the pool).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillbench.models.cifar.resnet import (
    BasicBlock,
    FeaturesAndLogits,
    ResidualStage,
    conv3x3,
    init_conv_bn_,
    run_stages,
)


class ShortcutBasicBlock(BasicBlock):
    """The CIFAR zoo's ``BasicBlock`` with its residual connection registered as ``shortcut`` (resnetv2's
    state-dict key) instead of ``downsample``; returns ``(relu(sum), sum)`` like it."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__(in_planes, planes, stride)
        self.shortcut = self._modules.pop("downsample")

    @property
    def downsample(self) -> nn.Module:
        return self.shortcut


class ResNet18(nn.Module):
    """Stem, four stages of two basic blocks (64, 128, 256, 512 wide), global average pool, linear head."""

    def __init__(self, num_classes: int = 200):
        super().__init__()
        self.conv1 = conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64)
        stages, in_planes = [], 64
        for planes, stride in zip((64, 128, 256, 512), (1, 2, 2, 2), strict=True):
            stages.append(ResidualStage.build(ShortcutBasicBlock, in_planes, planes, 2, stride))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)
        init_conv_bn_(self)  # resnetv2.py: He-normal fan-out convs, identity BN, torch's default linear

    def _stages(self) -> tuple[ResidualStage, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, *self._stages()])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [stage[-1].bn2 for stage in self._stages()]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | FeaturesAndLogits:
        """Logits, or with ``is_feat`` ``([stem, stage1..stage4, pooled], logits)`` (pre-ReLU sums with ``preact``)."""
        stem = F.relu(self.bn1(self.conv1(x)))
        x, stage_feats = run_stages(stem, self._stages(), preact)
        pooled = torch.flatten(self.avgpool(x), 1)
        logits = self.linear(pooled)
        if not is_feat:
            return logits
        return [stem, *stage_feats, pooled], logits


MODELS: dict[str, Callable[..., nn.Module]] = {"ResNet18": ResNet18}
