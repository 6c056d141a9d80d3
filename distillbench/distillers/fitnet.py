"""FitNets hints (Romero et al.): a trainable regressor maps one student stage onto the teacher's
same stage, and the two maps are pulled together with an MSE. Single stage, no hint pre-training."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Size, Tensor, nn

from distillbench.distillers.adapters import conv_to_teacher
from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput


class ConvRegressor(nn.Module):
    """``adapters.conv_to_teacher`` (RepDistiller's ConvReg choice of conv), then BatchNorm and ReLU."""

    def __init__(self, student_shape: Size, teacher_shape: Size):
        super().__init__()
        self.conv = conv_to_teacher(student_shape, teacher_shape, "FitNet's regressor")
        self.bn = nn.BatchNorm2d(teacher_shape[1])

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def hint_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Mean squared error over every element of the regressed student map and the teacher map."""
    return F.mse_loss(as_float32(f_s), as_float32(f_t))


class FitNet(Distiller):
    """``weight * hint_loss(regressor(student feats[hint_layer]), teacher feats[hint_layer])``.

    The regressor is built in ``setup`` from the probed shapes and trained with the student
    (weight decay included); its BatchNorm follows the distiller's train/eval mode.
    """

    def __init__(self, weight: float = 100.0, hint_layer: int = 2):
        super().__init__()
        self.weight = weight
        self.hint_layer = hint_layer
        self.regressor: ConvRegressor | None = None

    def _hint(self, out: ModelOutput, who: str) -> Tensor:
        n = len(out.feats)
        if not -n <= self.hint_layer < n:
            raise ConfigError(f"FitNet hint_layer={self.hint_layer} is out of range: the {who} has {n} features.")
        feat = out.feats[self.hint_layer]
        if feat.dim() != 4:
            raise ConfigError(
                f"FitNet hint_layer={self.hint_layer} must be a spatial map, but the {who}'s feats[{self.hint_layer}] "
                f"has shape {tuple(feat.shape)}."
            )
        return feat

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        f_s, f_t = self._hint(student, "student"), self._hint(teacher, "teacher")
        self.regressor = ConvRegressor(f_s.shape, f_t.shape).to(f_s.device)

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        if self.regressor is None:
            raise RuntimeError("FitNet.setup must run before the first forward: it builds the regressor.")
        hint = self.regressor(student.feats[self.hint_layer])
        return {"fitnet": self.weight * hint_loss(hint, teacher.feats[self.hint_layer])}
