"""MobileNetV2 for 32x32 inputs, in the half-width variant the CIFAR-100 tables use as a student.

Module names and registration order follow RepDistiller's layout, so its checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F

# (expansion, output channels at width 1, blocks, stride of the first block) per stage; an
# expansion of ``None`` means "the network's expand_ratio". The first stage never expands.
_STAGES: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Stages whose outputs are features: the last stage at each resolution.
_FEATURE_STAGES = (1, 2, 4, 6)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Pointwise expansion, depthwise 3x3, linear pointwise projection, identity skip when shapes allow.

    The expansion conv is kept even for an expansion of 1, and the whole body is one
    ``nn.Sequential`` named ``conv``, because that is the state-dict layout checkpoints carry.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            # No activation after the projection: the bottleneck is linear on purpose.
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 with a stride-2 stem, so a 32x32 image ends as a 2x2 map before pooling.

    The defaults (expansion 6, width 0.5) give RepDistiller's ``mobile_half``. The 1280-channel
    head is only ever widened, never narrowed, with ``width_mult``.
    """

    def __init__(self, num_classes: int = 100, expand_ratio: int = 6, width_mult: float = 0.5) -> None:
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, channels, 3, stride=2)

        self.blocks = nn.ModuleList()
        for expansion, base_channels, num_blocks, first_stride in _STAGES:
            out_channels = int(base_channels * width_mult)
            stage = []
            for i in range(num_blocks):
                stride = first_stride if i == 0 else 1
                stage.append(InvertedResidual(channels, out_channels, stride, expansion or expand_ratio))
                channels = out_channels
            self.blocks.append(nn.Sequential(*stage))

        self.last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, self.last_channels, 1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channels, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # He-normal over fan-out for convs, N(0, 0.01) for the classifier: the scheme the
        # published students were trained from.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.blocks])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """Last BN of the stages whose outputs are features 1-4 (OFD taps these)."""
        return [self.blocks[i][-1].conv[-1] for i in _FEATURE_STAGES]

    def forward(
        self, x: Tensor, is_feat: bool = False, preact: bool = False
    ) -> Tensor | tuple[list[Tensor], Tensor]:
        """Logits, or ``(features, logits)`` with ``is_feat``.

        Features are the stem output, the outputs of stages 1, 2, 4 and 6 (the last at each
        resolution) and the pooled vector. Stage outputs end in a linear projection, so there is
        no separate pre-activation: ``preact`` is accepted and ignored.
        """
        del preact
        feats = [self.conv1(x)]
        out = feats[0]
        for i, stage in enumerate(self.blocks):
            out = stage(out)
            if i in _FEATURE_STAGES:
                feats.append(out)
        out = self.conv2(out)
        # A fixed 2x2 window: global pooling for the 2x2 map a 32x32 input leaves.
        out = F.avg_pool2d(out, 2).flatten(1)
        feats.append(out)
        logits = self.classifier(out)
        return (feats, logits) if is_feat else logits


MODELS: dict[str, Callable[..., nn.Module]] = {"MobileNetV2": MobileNetV2}
