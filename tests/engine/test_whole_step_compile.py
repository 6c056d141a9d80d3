"""The whole training step compiled as one unit follows the eager step's trajectory."""

from __future__ import annotations

import pytest
import torch

from distillbench.distillers.crd import CRD
from distillbench.engine.speed import SpeedOptions
from distillbench.engine.step import DistillationObjective, Step
from distillbench.errors import ConfigError
from distillbench.models import create_model
from distillbench.models.outputs import probe_shapes
from distillbench.types import Batch

N, B = 64, 8


def crd_trajectory(compile_mode: str | None, steps: int = 4) -> tuple[list[dict[str, float]], dict]:
    torch.manual_seed(0)
    labels = torch.arange(N) % 4
    student, teacher = create_model("resnet8", num_classes=4), create_model("resnet8", num_classes=4).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    crd = CRD(weight=0.8, feat_dim=16, num_negatives=16)
    crd.setup(probe_shapes(student, (2, 3, 32, 32)), probe_shapes(teacher, (2, 3, 32, 32)), labels)
    optimizer = torch.optim.SGD([*student.parameters(), *crd.parameters()], lr=0.05, momentum=0.9)
    objective = DistillationObjective(student_fn=student, teacher_fn=teacher, distiller=crd, ce_weight=1.0,
                                      speed=SpeedOptions(), device=torch.device("cpu"))
    crd.defer_state_updates()  # as the trainer does: bank rows are written after the optimiser step
    step = Step(objective, optimizer, after_step=crd.apply_state_updates, compile_mode=compile_mode)
    images = torch.randn(N, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    seen = []
    for i in range(steps):
        rows = torch.arange(i * B, (i + 1) * B)
        out = step(Batch(images[rows], labels[rows], rows), epoch=1 + i // 2)
        seen.append({"loss": float(out.loss), **{k: float(v) for k, v in out.terms.items()}})
    return seen, {**student.state_dict(), **{f"crd.{k}": v for k, v in crd.state_dict().items()}}


@pytest.mark.slow
def test_the_compiled_step_equals_the_eager_step_on_crd():
    eager, eager_state = crd_trajectory(None)
    compiled, compiled_state = crd_trajectory("default")
    assert [set(s) for s in compiled] == [{"loss", "ce", "crd"}] * 4
    for a, b in zip(eager, compiled, strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    for name, value in eager_state.items():
        torch.testing.assert_close(compiled_state[name], value, rtol=1e-3, atol=1e-4, msg=name)


def test_compile_scope_is_checked():
    assert SpeedOptions.resolve(torch.device("cpu"), compile=True, compile_scope="step").whole_step
    assert not SpeedOptions.resolve(torch.device("cpu"), compile=True).whole_step
    assert not SpeedOptions.resolve(torch.device("cpu"), compile=False, compile_scope="step").whole_step
    with pytest.raises(ConfigError, match="compile_scope must be one of models, step"):
        SpeedOptions.resolve(torch.device("cpu"), compile=True, compile_scope="graph")
