"""The CIFAR zoo's ShuffleV2 with global average pooling, for mdistiller's Tiny-ImageNet cell.

mdistiller's Tiny-ImageNet ShuffleV2 is its CIFAR ``ShuffleNetv2.py`` (``tiny_imagenet_model_dict`` @ a08d46f),
whose fixed 4x4 pool leaves a 2x2 map on 64x64 inputs (8x8 after the three stride-2 stages), 4096 values for a
1024-wide linear layer: that code fails on the first batch. Pooling globally is what the 4x4 window does at
32x32, and it keeps the layout: the state-dict keys are ``ShuffleV2``'s (RepDistiller's/mdistiller's) unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from distillbench.models.cifar.shufflenetv2 import ShuffleNetV2


class ShuffleNetV2GlobalPool(ShuffleNetV2):
    """``ShuffleNetV2`` whose head pools the whole final map, whatever the input size."""

    def pool(self, out: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def shufflev2_tinyimagenet(num_classes: int = 200) -> nn.Module:
    return ShuffleNetV2GlobalPool(num_classes=num_classes)


MODELS: dict[str, Callable[..., nn.Module]] = {"ShuffleV2_tinyimagenet": shufflev2_tinyimagenet}
