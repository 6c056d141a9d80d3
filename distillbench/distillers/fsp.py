"""Flow of solution procedure (Yim et al.) in RepDistiller's two-stage form.

The "flow" between two consecutive feature maps is their Gram matrix across channels,
averaged over positions. For ``init_epochs`` epochs the student's feature stages are trained
to reproduce the teacher's flow matrices; the main stage is then plain cross-entropy training
(RepDistiller sets the distillation term to zero there).
"""

from __future__ import annotations

from torch import Tensor, nn

from distillbench.distillers.attention import pool_to_smaller
from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput


def fsp_matrix(bottom: Tensor, top: Tensor) -> Tensor:
    """``G[b, c_top, c_bottom]``: mean over positions of ``top[b, c_top] * bottom[b, c_bottom]``.

    The taller map is first pooled to the other's height (as a square), as RepDistiller does.
    """
    bottom, top = pool_to_smaller(bottom, top)
    positions = bottom.shape[2] * bottom.shape[3]
    return top.flatten(2) @ bottom.flatten(2).transpose(1, 2) / positions


def fsp_loss(student_maps: list[Tensor], teacher_maps: list[Tensor]) -> Tensor:
    """Sum over consecutive map pairs of the mean squared difference of the FSP matrices."""
    s_maps = [as_float32(f) for f in student_maps]
    t_maps = [as_float32(f) for f in teacher_maps]
    return sum(
        (fsp_matrix(s_maps[i], s_maps[i + 1]) - fsp_matrix(t_maps[i], t_maps[i + 1])).pow(2).mean()
        for i in range(len(s_maps) - 1)
    )


class FSP(Distiller):
    """Two-stage FSP on ``feats[:-1]`` (stem and every stage): the init stage trains
    ``student.get_feat_modules()`` on ``fsp_loss`` at the main stage's base lr.

    FSP matrices are comparable only when both networks have the same channel count at every
    position, so any other pair is refused at setup; those are the tables' N/A cells.

    The main stage has no FSP term (RepDistiller's ``loss_kd = 0``): the method's whole effect is
    the initialisation. ``forward`` still returns a zero term named ``fsp`` so that every
    distiller reports a named term; it is a constant tensor, outside the graph, and adds nothing
    to the gradient of the total loss. FSP owns no parameters.
    """

    def __init__(self, init_epochs: int = 30):
        super().__init__()
        if init_epochs < 0:
            raise ConfigError(f"FSP init_epochs must be >= 0, got {init_epochs}.")
        self.init_epochs = init_epochs

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        s_maps, t_maps = student.feats[:-1], teacher.feats[:-1]
        if any(f.dim() != 4 for f in [*s_maps, *t_maps]):
            raise ConfigError("FSP compares spatial maps, but feats[:-1] of one of the networks holds a non-map.")
        s_channels = [f.shape[1] for f in s_maps]
        t_channels = [f.shape[1] for f in t_maps]
        if s_channels != t_channels or len(s_channels) < 2:
            raise ConfigError(
                "FSP needs the same number of feature maps, with the same channel counts at every position of "
                f"feats[:-1], in both networks; the student has channels {s_channels} and the teacher {t_channels}. "
                "FSP is undefined for this pair (an N/A cell of the tables)."
            )

    def init_modules(self, student: nn.Module) -> nn.Module:
        return student.get_feat_modules()

    def init_loss(self, student: ModelOutput, teacher: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        return {"fsp": fsp_loss(student.feats[:-1], teacher.feats[:-1])}

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        return {"fsp": as_float32(student.logits).new_zeros(())}
