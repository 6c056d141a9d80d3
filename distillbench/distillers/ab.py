"""Activation-boundary distillation (Heo et al.) in RepDistiller's two-stage form.

For ``init_epochs`` epochs the student's feature stages and one connector per stage pair are
trained to put the student's pre-activation stage maps on the same side of zero as the
teacher's, with a hinge-like squared margin loss. The main stage is then plain cross-entropy
training of the whole student: RepDistiller sets the distillation term to zero there and
neither trains nor uses the connectors again.
"""

from __future__ import annotations

from torch import Size, Tensor, nn

from distillbench.distillers.adapters import conv_to_teacher
from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput


class ConvConnector(nn.Module):
    """``adapters.conv_to_teacher`` (RepDistiller's ConvReg choice of conv), then BatchNorm, without a ReLU."""

    def __init__(self, student_shape: Size, teacher_shape: Size):
        super().__init__()
        self.conv = conv_to_teacher(student_shape, teacher_shape, "AB's connector")
        self.bn = nn.BatchNorm2d(teacher_shape[1])

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


def make_connector(student_shape: Size, teacher_shape: Size) -> nn.Module:
    """The identity when channels and height already agree (RepDistiller's test), else a ``ConvConnector``."""
    if student_shape[1] == teacher_shape[1] and student_shape[2] == teacher_shape[2]:
        return nn.Identity()
    return ConvConnector(student_shape, teacher_shape)


def boundary_loss(source: Tensor, target: Tensor, margin: float) -> Tensor:
    """Sum over all elements of the squared margin violations of the activation boundary.

    Where the teacher neuron is off (``target <= 0``) the student is pushed below ``-margin``;
    where it is on, above ``+margin``. Elements already beyond the margin on the right side
    contribute nothing.
    """
    push_down = (source > -margin) & (target <= 0)
    push_up = (source <= margin) & (target > 0)
    return ((source + margin).pow(2) * push_down + (source - margin).pow(2) * push_up).sum()


def ab_loss(student_maps: list[Tensor], teacher_maps: list[Tensor], margin: float = 1.0) -> Tensor:
    """RepDistiller's ``ABLoss`` summed over stages.

    Stage ``i`` of ``n`` is weighted by ``2**(i - n + 1)`` (the deepest stage by 1, each earlier
    one by half the next), and every term is divided by the batch size and scaled by 3/1000.
    """
    n = len(student_maps)
    batch_size = student_maps[0].shape[0]
    pairs = enumerate(zip(student_maps, teacher_maps, strict=True))
    return sum(
        2.0 ** (i - n + 1) * boundary_loss(as_float32(g_s), as_float32(g_t), margin) / batch_size / 1000 * 3
        for i, (g_s, g_t) in pairs
    )


class AB(Distiller):
    """Two-stage AB: the init stage trains ``student.get_feat_modules()`` and the connectors on
    ``ab_loss(connector(student feats[1:-1]), teacher feats[1:-1])``, all pre-activation, at the
    main stage's base lr.

    The main stage has no AB term (RepDistiller's ``loss_kd = 0``): the method's whole effect is
    the initialisation. ``forward`` still returns a zero term named ``ab`` so that every distiller
    reports a named term; it is a constant tensor, outside the graph, and adds nothing to the
    gradient of the total loss. The connectors are frozen after the init stage, since
    RepDistiller keeps them out of the main optimiser.
    """

    preact = True

    def __init__(self, margin: float = 1.0, init_epochs: int = 30):
        super().__init__()
        if init_epochs < 0:
            raise ConfigError(f"AB init_epochs must be >= 0, got {init_epochs}.")
        self.margin = margin
        self.init_epochs = init_epochs
        self.connectors = nn.ModuleList()

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        s_maps, t_maps = student.feats[1:-1], teacher.feats[1:-1]
        if not s_maps or len(s_maps) != len(t_maps):
            raise ConfigError(
                f"AB pairs the stage maps feats[1:-1] one to one, but the student has {len(s_maps)} and the teacher "
                f"{len(t_maps)}."
            )
        for i, (f_s, f_t) in enumerate(zip(s_maps, t_maps, strict=True), start=1):
            if f_s.dim() != 4 or f_t.dim() != 4:
                raise ConfigError(
                    f"AB pairs spatial maps, but student feats[{i}] has shape {tuple(f_s.shape[1:])} and teacher "
                    f"feats[{i}] has shape {tuple(f_t.shape[1:])}."
                )
        self.connectors = nn.ModuleList(
            make_connector(f_s.shape, f_t.shape).to(f_s.device) for f_s, f_t in zip(s_maps, t_maps, strict=True)
        )

    def init_modules(self, student: nn.Module) -> nn.Module:
        return nn.ModuleList([self.connectors, student.get_feat_modules()])

    def init_loss(self, student: ModelOutput, teacher: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        if not self.connectors:
            raise RuntimeError("AB.setup must run before the init stage: it builds the connectors.")
        g_s = [connect(f) for connect, f in zip(self.connectors, student.feats[1:-1], strict=True)]
        return {"ab": ab_loss(g_s, teacher.feats[1:-1], self.margin)}

    def end_init_stage(self) -> None:
        self.connectors.requires_grad_(False)

    def extra_parameter_count(self) -> int:
        """The connectors, which the init stage trains even though the main stage freezes them."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        return {"ab": as_float32(student.logits).new_zeros(())}
