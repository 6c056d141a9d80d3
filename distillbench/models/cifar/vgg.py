"""VGG with batch norm for 32x32 inputs: five conv blocks, global average pool, one linear layer.

Module names and registration order follow RepDistiller's layout (its ``vgg*_bn`` models), so
its checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillbench.models.cifar.resnet import FeaturesAndLogits, init_conv_bn_

# Conv widths of the five blocks; 8/11/13/16/19 counts the conv layers plus the classifier.
_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def conv_bn_block(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    """3x3 conv-BN-ReLU units, minus the last ReLU.

    Ending on the BN lets the network read both the pre-activation map and its ReLU.
    """
    layers: list[nn.Module] = []
    for width in widths:
        conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        layers += [conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """Blocks 0-4 with 2x2 max-pools between them, then average pooling and the classifier.

    The pool between blocks 3 and 4 only runs on 64x64 inputs, so the last two blocks see 4x4
    maps on 32x32 CIFAR and 64x64 Tiny-ImageNet inputs alike.
    """

    def __init__(self, widths: Sequence[Sequence[int]], num_classes: int = 100):
        super().__init__()
        self.block0 = conv_bn_block(3, widths[0])
        self.block1 = conv_bn_block(widths[0][-1], widths[1])
        self.block2 = conv_bn_block(widths[1][-1], widths[2])
        self.block3 = conv_bn_block(widths[2][-1], widths[3])
        self.block4 = conv_bn_block(widths[3][-1], widths[4])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[4][-1], num_classes)
        init_conv_bn_(self)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList(
            [
                self.block0,
                self.pool0,
                self.block1,
                self.pool1,
                self.block2,
                self.pool2,
                self.block3,
                self.pool3,
                self.block4,
                self.pool4,
            ]
        )

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The BN closing blocks 1-4, whose outputs are the pre-activation features."""
        return [block[-1] for block in (self.block1, self.block2, self.block3, self.block4)]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | FeaturesAndLogits:
        """Logits, or with ``is_feat`` ``([block0, block1..block4, pooled], logits)``.

        Block features are post-ReLU; ``preact`` swaps those of blocks 1-4 for their BN outputs.
        """
        pool_before_block4 = x.shape[2] == 64
        x = F.relu(self.block0(x))
        feats = [x]
        steps = (
            (self.pool0, self.block1, True),
            (self.pool1, self.block2, True),
            (self.pool2, self.block3, True),
            (self.pool3, self.block4, pool_before_block4),
        )
        for pool, block, apply_pool in steps:
            if apply_pool:
                x = pool(x)
            pre = block(x)
            x = F.relu(pre)
            feats.append(pre if preact else x)
        pooled = torch.flatten(self.pool4(x), 1)
        logits = self.classifier(pooled)
        if not is_feat:
            return logits
        return [*feats, pooled], logits


MODELS: dict[str, Callable[..., nn.Module]] = {
    name: partial(VGG, widths) for name, widths in _CONFIGS.items()
}
