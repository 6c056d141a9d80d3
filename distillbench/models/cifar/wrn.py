"""Wide ResNets WRN-d-k for 32x32 inputs: pre-activation blocks, depth 6n+4, widths 16k/32k/64k.

Module names and registration order follow RepDistiller's layout, so its checkpoints load unchanged
(hence the camel-case ``convShortcut``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillbench.models.cifar.resnet import FeaturesAndLogits, conv3x3, init_conv_bn_


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv twice, plus the input.

    When the width changes, the 1x1 projection shortcut reads the pre-activated input
    ``relu(bn1(x))``; otherwise the raw input is added. Width alone decides: every strided
    block also widens.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, out_planes, stride)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = conv3x3(out_planes, out_planes)
        self.convShortcut = (
            None
            if in_planes == out_planes
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class WideStage(nn.Module):
    """``num_blocks`` wide blocks; the first changes width and stride. Blocks sit under ``.layer``."""

    def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            WideBasicBlock(in_planes, out_planes, stride),
            *(WideBasicBlock(out_planes, out_planes, 1) for _ in range(num_blocks - 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """Stem conv, three wide stages, then the final BN-ReLU, 8x8 average pool and linear head."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = conv3x3(3, widths[0])
        self.block1 = WideStage(n, widths[0], widths[1], stride=1)
        self.block2 = WideStage(n, widths[1], widths[2], stride=2)
        self.block3 = WideStage(n, widths[2], widths[3], stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        init_conv_bn_(self)
        nn.init.zeros_(self.fc.bias)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.block1, self.block2, self.block3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The BN that first reads each stage's output: the next stage's first ``bn1``, then the final one."""
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | FeaturesAndLogits:
        """Logits, or with ``is_feat`` ``([stem, stage1, stage2, stage3, pooled], logits)``.

        Stage outputs are raw residual sums (these blocks activate on entry, not exit).
        ``preact`` passes each through the BN of ``get_bn_before_relu``, giving the
        normalised map just before the ReLU. Those BN modules are called a second time, so in
        training mode their running statistics get a second update per step; that keeps
        training runs comparable with RepDistiller's.
        """
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        pooled = torch.flatten(F.avg_pool2d(self.relu(self.bn1(f3)), 8), 1)
        logits = self.fc(pooled)
        if not is_feat:
            return logits
        stage_feats = [f1, f2, f3]
        if preact:
            stage_feats = [bn(f) for bn, f in zip(self.get_bn_before_relu(), stage_feats, strict=True)]
        return [f0, *stage_feats, pooled], logits


MODELS: dict[str, Callable[..., nn.Module]] = {
    "wrn_16_1": partial(WideResNet, 16, 1),
    "wrn_16_2": partial(WideResNet, 16, 2),
    "wrn_40_1": partial(WideResNet, 40, 1),
    "wrn_40_2": partial(WideResNet, 40, 2),
}
