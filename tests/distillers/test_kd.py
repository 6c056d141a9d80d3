"""KD against RepDistiller's ``distiller_zoo/KD.py::DistillKL`` (commit b84f547).

The pinned numbers were computed once by running that class in float64 on the inputs of
``logits()`` below; only the numbers are kept here.
"""

from __future__ import annotations

import pytest
import torch

from distillbench.distillers import KD, Batch, kd_loss
from distillbench.models import ModelOutput

# DistillKL(T)(z_s, z_t): loss, d loss / d z_s[0], and the sum of |d loss / d z_s|.
REFERENCE = {
    4.0: (4.226824401258494,
          [-0.0710958672587635, 0.06607179966015511, 0.1387656543396154, 0.09147387210710903,
           -0.03943739196478541, -0.11844136409070699, -0.04045939849763581, 0.0037096241182933976,
           0.0058957612590221364, -0.03648268967230331],
          2.209818161456603),
    1.0: (2.3507184737716953,
          [-0.0783842128334021, 0.059599945875855896, 0.10529750283937277, 0.040248041591476956,
           -0.018280758808666864, -0.07911063879809067, -0.003739619674005181, 0.00013254464688331523,
           0.0006460756678659575, -0.02640888050729012],
          1.2450740319490063),
}


def logits() -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.arange(40, dtype=torch.float64)
    student = (3 * torch.sin(0.7 * a + 0.3)).reshape(4, 10).requires_grad_()
    teacher = (3 * torch.cos(1.3 * a + 0.1)).reshape(4, 10)
    return student, teacher


@pytest.mark.parametrize("temperature", [4.0, 1.0])
def test_kd_loss_and_gradient_equal_reference(temperature):
    student, teacher = logits()
    loss = kd_loss(student, teacher, temperature)
    loss.backward()
    want_loss, want_grad_row0, want_grad_abs_sum = REFERENCE[temperature]
    assert loss.item() == pytest.approx(want_loss, rel=1e-9)
    assert student.grad[0].tolist() == pytest.approx(want_grad_row0, rel=1e-7, abs=1e-12)
    assert student.grad.abs().sum().item() == pytest.approx(want_grad_abs_sum, rel=1e-9)


def test_kd_distiller_weights_the_term_and_names_it():
    student, teacher = logits()
    batch = Batch(torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long), torch.arange(4))
    terms = KD(weight=0.9, temperature=4.0)(ModelOutput(student, [student]), ModelOutput(teacher, [teacher]), batch, 1)
    assert list(terms) == ["kd"]
    assert terms["kd"].item() == pytest.approx(0.9 * REFERENCE[4.0][0], rel=1e-9)


def test_kd_is_computed_in_float32_for_half_precision_logits():
    student, teacher = logits()
    loss = kd_loss(student.detach().bfloat16(), teacher.bfloat16(), 4.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(REFERENCE[4.0][0], rel=2e-2)


def test_identical_distributions_give_zero():
    student, _ = logits()
    assert kd_loss(student.detach(), student.detach(), 4.0).item() == pytest.approx(0.0, abs=1e-12)
