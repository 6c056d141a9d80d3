"""The conv that maps a student stage map onto the teacher's shape (FitNet's regressor, AB's connector)."""

from __future__ import annotations

from torch import Size, nn

from distillbench.errors import ConfigError


def conv_to_teacher(student_shape: Size, teacher_shape: Size, owner: str) -> nn.Module:
    """The conv RepDistiller's ``ConvReg`` picks by height: stride-2 3x3 when the student map is twice as
    tall, stride-2 4x4 transposed when half as tall, else a valid conv whose kernel absorbs the size
    difference (1x1 for equal sizes). Any other pairing is refused here, naming the two shapes."""
    s_c, s_h, s_w = student_shape[1:]
    t_c, t_h, t_w = teacher_shape[1:]
    conv: nn.Module | None = None
    out_hw: tuple[int, int] | None = None
    if s_h == 2 * t_h:
        conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        out_hw = ((s_h - 1) // 2 + 1, (s_w - 1) // 2 + 1)
    elif 2 * s_h == t_h:
        conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        out_hw = (2 * s_h, 2 * s_w)
    elif s_h >= t_h and s_w >= t_w:
        conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        out_hw = (t_h, t_w)
    if out_hw != (t_h, t_w):
        raise ConfigError(
            f"{owner} cannot map a student map of shape {tuple(student_shape[1:])} onto a teacher map of shape "
            f"{tuple(teacher_shape[1:])}: the student map must be twice, half or at least as large as the teacher's "
            "in both height and width."
        )
    return conv
