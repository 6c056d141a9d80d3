"""Factor transfer (Kim et al.) in RepDistiller's two-stage form.

Init stage: a paraphraser (a convolutional autoencoder without BatchNorm) learns to reconstruct
the teacher's last spatial map ``feats[-2]``. Main stage: the paraphraser is frozen and its
encoder's output is the teacher factor; a translator (convs with BatchNorm) maps the student's
``feats[-2]`` to a student factor, and the two are compared the way RepDistiller's
``FactorTransfer`` does: each factor is reduced to an L2-normalised channel mean of its squares
(as in attention transfer, not the paper's normalisation of the whole factor), and the loss is
their mean absolute difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillbench.distillers.attention import attention_map, pool_to_smaller
from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput

# The students for which RepDistiller's helper/pretrain.py trains the paraphraser at lr 0.01
# instead of the student's base lr.
REFERENCE_FIXED_INIT_LR_STUDENTS = (
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
)

LEAKY_SLOPE = 0.1


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def deconv3x3(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


class Paraphraser(nn.Module):
    """Autoencoder on the teacher map: C -> C -> kC -> kC, then back kC -> kC -> C -> C.

    Every conv is 3x3, stride 1, with bias and followed by LeakyReLU(0.1), decoder included; no
    BatchNorm, so train and eval mode compute the same thing.
    """

    def __init__(self, channels: int, rate: float):
        super().__init__()
        factor = int(channels * rate)
        encoder = [conv3x3(channels, channels), conv3x3(channels, factor), conv3x3(factor, factor)]
        decoder = [deconv3x3(factor, factor), deconv3x3(factor, channels), deconv3x3(channels, channels)]
        self.encoder = nn.Sequential(*(m for conv in encoder for m in (conv, nn.LeakyReLU(LEAKY_SLOPE))))
        self.decoder = nn.Sequential(*(m for conv in decoder for m in (conv, nn.LeakyReLU(LEAKY_SLOPE))))

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction, which the init stage trains."""
        return self.decoder(self.encoder(x))


class Translator(nn.Module):
    """Student map to a factor of the paraphraser's width: three 3x3 conv + BN + LeakyReLU(0.1)."""

    def __init__(self, in_channels: int, factor_channels: int):
        super().__init__()
        widths = [(in_channels, in_channels), (in_channels, factor_channels), (factor_channels, factor_channels)]
        self.encoder = nn.Sequential(
            *(layer for c_in, c_out in widths
              for layer in (conv3x3(c_in, c_out), nn.BatchNorm2d(c_out), nn.LeakyReLU(LEAKY_SLOPE)))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


def factor_loss(factor_s: Tensor, factor_t: Tensor, p: float = 2.0) -> Tensor:
    """Mean absolute difference of the normalised ``mean_c(factor**p)`` maps, the taller factor
    first pooled to the other's height."""
    factor_s, factor_t = pool_to_smaller(as_float32(factor_s), as_float32(factor_t))
    return (attention_map(factor_s, p) - attention_map(factor_t, p)).abs().mean()


class FT(Distiller):
    """``weight * factor_loss(translator(student feats[-2]), paraphraser.encoder(teacher feats[-2]))``.

    The init stage trains only the paraphraser, on the MSE of its reconstruction of the teacher
    map. Its lr follows RepDistiller's rule: ``init_lr`` when the student's architecture is one
    of ``init_lr_students``, else the main stage's base lr (vgg8: 0.05, MobileNetV2/ShuffleV1/
    ShuffleV2: 0.01); without ``student_arch`` it is always the base lr. After the init stage the
    paraphraser is frozen (RepDistiller keeps it out of the main optimiser) and only the
    translator trains with the student; the teacher factor is a fixed target, computed without
    a graph.
    """

    def __init__(
        self,
        weight: float = 200.0,
        rate: float = 0.5,
        p: float = 2.0,
        init_epochs: int = 30,
        init_lr: float = 0.01,
        init_lr_students: Sequence[str] = REFERENCE_FIXED_INIT_LR_STUDENTS,
        student_arch: str | None = None,
    ):
        super().__init__()
        if init_epochs < 0:
            raise ConfigError(f"FT init_epochs must be >= 0, got {init_epochs}.")
        self.weight = weight
        self.rate = rate
        self.p = p
        self.init_epochs = init_epochs
        self.fixed_init_lr = init_lr
        self.init_lr_students = tuple(init_lr_students)
        self.student_arch = student_arch
        self.paraphraser: Paraphraser | None = None
        self.translator: Translator | None = None

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        f_s, f_t = student.feats[-2], teacher.feats[-2]
        if f_s.dim() != 4 or f_t.dim() != 4:
            raise ConfigError(
                f"FT needs a spatial map at feats[-2], but the student's has shape {tuple(f_s.shape[1:])} and the "
                f"teacher's {tuple(f_t.shape[1:])}."
            )
        factor_channels = int(f_t.shape[1] * self.rate)
        if factor_channels < 1:
            raise ConfigError(f"FT rate={self.rate} leaves no factor channels for a {f_t.shape[1]}-channel teacher.")
        self.paraphraser = Paraphraser(f_t.shape[1], self.rate).to(f_t.device)
        self.translator = Translator(f_s.shape[1], factor_channels).to(f_s.device)

    def _built(self) -> tuple[Paraphraser, Translator]:
        if self.paraphraser is None or self.translator is None:
            raise RuntimeError("FT.setup must run first: it builds the paraphraser and the translator.")
        return self.paraphraser, self.translator

    def init_modules(self, student: nn.Module) -> nn.Module:
        return self._built()[0]

    def init_lr(self, base_lr: float) -> float:
        return self.fixed_init_lr if self.student_arch in self.init_lr_students else base_lr

    def init_loss(self, student: ModelOutput, teacher: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        paraphraser, _ = self._built()
        f_t = teacher.feats[-2]
        return {"ft_reconstruction": F.mse_loss(as_float32(paraphraser(f_t)), as_float32(f_t))}

    def end_init_stage(self) -> None:
        self._built()[0].requires_grad_(False)

    def extra_parameter_count(self) -> int:
        """Paraphraser and translator: each is trained in one of the two stages."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        paraphraser, translator = self._built()
        with torch.no_grad():
            factor_t = paraphraser.encoder(teacher.feats[-2])
        factor_s = translator(student.feats[-2])
        return {"ft": self.weight * factor_loss(factor_s, factor_t, self.p)}
