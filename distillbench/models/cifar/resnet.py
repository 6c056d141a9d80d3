"""CIFAR ResNets: a 3x3 stem and three stages of basic blocks, depth 6n+2.

Module names and registration order follow RepDistiller's layout, so its checkpoints load
unchanged. The residual building blocks shared with ``resnet_bottleneck`` (stages that also
report the pre-ReLU sum, shortcuts, weight init) live here; ``wrn`` and ``vgg`` reuse the init.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FeaturesAndLogits = tuple[list[Tensor], Tensor]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution that keeps the spatial size at stride 1; bias-free since a BN follows."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def make_shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Identity when shapes agree, otherwise a strided 1x1 conv + BN projection.

    The projection is a two-entry ``nn.Sequential`` so its keys read ``<name>.0.weight`` and
    ``<name>.1.*``; the identity holds no state and so adds no keys.
    """
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


def init_conv_bn_(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions with zero bias, and BN as the identity affine map.

    Every architecture here starts from this; each then treats its classifier its own way.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers around a residual connection.

    Returns ``(relu(sum), sum)``: the pre-ReLU residual sum is what distillers that match
    pre-activations (AB) tap, and the ReLU is out of place so that sum stays intact.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = make_shortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        preact = out + self.downsample(x)
        return F.relu(preact), preact


class ResidualStage(nn.Sequential):
    """Residual blocks in sequence; returns the last block's ``(output, pre-ReLU sum)``."""

    @classmethod
    def build(
        cls, block: type[nn.Module], in_planes: int, planes: int, num_blocks: int, stride: int
    ) -> ResidualStage:
        """Only the first block changes stride and width; the rest map ``planes * expansion`` to itself."""
        out_planes = planes * block.expansion
        blocks = [block(in_planes, planes, stride)]
        blocks += [block(out_planes, planes) for _ in range(num_blocks - 1)]
        return cls(*blocks)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        preact = x
        for block in self:
            x, preact = block(x)
        return x, preact


def run_stages(x: Tensor, stages: Iterable[nn.Module], preact: bool) -> tuple[Tensor, list[Tensor]]:
    """Run residual stages in turn; collect each one's output, or its pre-ReLU sum if ``preact``."""
    feats = []
    for stage in stages:
        x, pre = stage(x)
        feats.append(pre if preact else x)
    return x, feats


class ResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: stem, three stages of ``n`` basic blocks, 8x8 average pool.

    ``widths`` gives the stem width then the three stage widths (``resnet*x4`` quadruples them).
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2 (8, 14, 20, 32, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = ResidualStage.build(BasicBlock, widths[0], widths[1], n, stride=1)
        self.layer2 = ResidualStage.build(BasicBlock, widths[1], widths[2], n, stride=2)
        self.layer3 = ResidualStage.build(BasicBlock, widths[2], widths[3], n, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(widths[3] * BasicBlock.expansion, num_classes)
        init_conv_bn_(self)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.relu, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The BN that closes each stage's residual branch, just before the sum and its ReLU."""
        return [stage[-1].bn2 for stage in (self.layer1, self.layer2, self.layer3)]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | FeaturesAndLogits:
        """Logits, or with ``is_feat`` ``([stem, stage1, stage2, stage3, pooled], logits)``.

        ``preact`` swaps the three stage outputs for their pre-ReLU residual sums.
        """
        stem = self.relu(self.bn1(self.conv1(x)))
        x, stage_feats = run_stages(stem, (self.layer1, self.layer2, self.layer3), preact)
        pooled = torch.flatten(self.avgpool(x), 1)
        logits = self.fc(pooled)
        if not is_feat:
            return logits
        return [stem, *stage_feats, pooled], logits


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet8": partial(ResNet, 8, _NARROW),
    "resnet14": partial(ResNet, 14, _NARROW),
    "resnet20": partial(ResNet, 20, _NARROW),
    "resnet32": partial(ResNet, 32, _NARROW),
    "resnet44": partial(ResNet, 44, _NARROW),
    "resnet56": partial(ResNet, 56, _NARROW),
    "resnet110": partial(ResNet, 110, _NARROW),
    "resnet8x4": partial(ResNet, 8, _WIDE),
    "resnet32x4": partial(ResNet, 32, _WIDE),
}
