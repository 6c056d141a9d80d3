"""ResNet-18 with a 3x3 stride-1 stem and no max-pool: mdistiller's Tiny-ImageNet teacher.

State-dict layout (mdistiller ``mdistiller/models/cifar/resnetv2.py`` @ a08d46f, also RepDistiller's
``models/resnetv2.py``): ``conv1.weight``, ``bn1.*``; ``layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}.*`` with a
projection ``layer{2,3,4}.0.shortcut.{0.weight,1.*}`` where stride or width changes; ``linear.{weight,bias}``.
Global average pooling makes it take any input size (64x64 on Tiny-ImageNet, a 8x8 map before the pool).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from distillbench.models.cifar.resnet import BasicBlock
from distillbench.models.cifar.resnet_bottleneck import ResNetV2


class ShortcutBasicBlock(BasicBlock):
    """The CIFAR zoo's ``BasicBlock`` with its residual connection registered as ``shortcut`` (resnetv2's
    state-dict key) instead of ``downsample``; returns ``(relu(sum), sum)`` like it."""

    closing_bn = "bn2"

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__(in_planes, planes, stride)
        self.shortcut = self._modules.pop("downsample")

    @property
    def downsample(self) -> nn.Module:
        return self.shortcut


def resnet18(num_classes: int = 200) -> nn.Module:
    """resnetv2.py's ResNet18: four stages of two basic blocks (64, 128, 256, 512 wide)."""
    return ResNetV2(ShortcutBasicBlock, (2, 2, 2, 2), num_classes=num_classes)


MODELS: dict[str, Callable[..., nn.Module]] = {"ResNet18": resnet18}
