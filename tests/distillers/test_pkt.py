"""PKT against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, by running
``distiller_zoo/PKT.py::PKT`` (``cosine_similarity_loss``, eps 1e-7) on the pooled vectors of
``features()`` below. Only the numbers are kept here.
"""

from __future__ import annotations

import math

import pytest
import torch

from distillbench.distillers.base import Batch
from distillbench.distillers.pkt import PKT, pkt_loss, similarity_distribution
from distillbench.models import ModelOutput

# case: (loss, d loss / d f_s row 0, sum |grad| or None)
REFERENCE = {
    "distinct": (
        0.24401090290369526,
        [0.030441965182145515, 0.023971007599916508, 0.013526655245411495, 0.000840146777340206,
         -0.011985623037969628, -0.022824675702444952, -0.029880347683527146, -0.03198310240468058],
        0.4610265368183898,
    ),
    # Teacher sample 4 is all zero: eps in the norm keeps it a zero vector, cos 0 -> 1/2.
    "zero_teacher_row": (
        0.2348296064388583,
        [0.03283542095196694, 0.025855693615238706, 0.01459016905383656, 0.0009062020801371973,
         -0.012927975459089441, -0.024619233060923215, -0.03222964710480573, -0.0344977278827735],
        0.4840219458380406,
    ),
    # Student sample 2 is all zero. The reference's loss is finite, but its sqrt(sum x^2) has an
    # infinite derivative at 0, so sample 2's gradient is NaN there; vector_norm's is finite here.
    "zero_student_row": (
        0.15309754638502548,
        [0.03035605087299255, 0.02390335584235463, 0.013488479883444066, 0.000837775696144405,
         -0.011951796811876692, -0.022760259148634943, -0.029796018383953585, -0.03189283864526569],
        None,
    ),
}


def wave(shape: tuple[int, ...], freq: float, phase: float, scale: float = 1.0) -> torch.Tensor:
    n = math.prod(shape)
    return (scale * torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase)).reshape(shape)


def features(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    f_s, f_t = wave((6, 8), 0.41, 0.3, 1.5), wave((6, 11), 0.59, 0.8, 2.5)
    if case == "zero_student_row":
        f_s[2] = 0
    if case == "zero_teacher_row":
        f_t[4] = 0
    return f_s.requires_grad_(), f_t


def output(pooled: torch.Tensor) -> ModelOutput:
    b = pooled.shape[0]
    return ModelOutput(torch.zeros(b, 10, dtype=pooled.dtype), [torch.zeros(b, 2, 4, 4, dtype=pooled.dtype), pooled])


def batch(b: int = 6) -> Batch:
    return Batch(torch.zeros(b, 3, 32, 32), torch.zeros(b, dtype=torch.long), torch.arange(b))


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_loss_and_gradient_equal_reference(case):
    want_loss, want_row0, want_abs = REFERENCE[case]
    f_s, f_t = features(case)
    loss = pkt_loss(f_s, f_t)
    loss.backward()
    assert loss.item() == pytest.approx(want_loss, rel=1e-9)
    assert f_s.grad[0].tolist() == pytest.approx(want_row0, rel=1e-7)
    assert torch.isfinite(f_s.grad).all()
    if want_abs is not None:
        assert f_s.grad.abs().sum().item() == pytest.approx(want_abs, rel=1e-9)


def test_term_is_weighted_and_named():
    f_s, f_t = features("distinct")
    terms = PKT()(output(f_s), output(f_t), batch(), 1)
    assert list(terms) == ["pkt"]
    assert terms["pkt"].item() == pytest.approx(30000 * REFERENCE["distinct"][0], rel=1e-9)


def test_distribution_is_row_stochastic_with_the_diagonal():
    f_s, _ = features("distinct")
    p = similarity_distribution(f_s.detach(), 1e-7)
    assert p.sum(dim=1).tolist() == pytest.approx([1.0] * 6, rel=1e-12)
    # A zero row has cosine 0 with everything, so (0 + 1) / 2 everywhere and a uniform row.
    p_zero = similarity_distribution(features("zero_student_row")[0].detach(), 1e-7)
    assert p_zero[2].tolist() == pytest.approx([1 / 6] * 6, rel=1e-12)


def test_non_finite_inputs_become_zero_vectors():
    """Entries turned into NaN by the normalisation are set to 0, as in the reference."""
    x = torch.tensor([[1.0, 0.0], [float("inf"), 1.0], [0.0, 1.0]], dtype=torch.float64)
    zeroed = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    p = similarity_distribution(x, 1e-7)
    assert torch.equal(p, similarity_distribution(zeroed, 1e-7))
    assert p[0].tolist() == pytest.approx([0.5, 0.25, 0.25], rel=1e-6)


def test_identical_features_give_zero():
    f_s, _ = features("distinct")
    assert pkt_loss(f_s.detach(), f_s.detach()).item() == pytest.approx(0.0, abs=1e-15)


def test_half_precision_features_give_a_float32_loss():
    f_s, f_t = features("distinct")
    loss = pkt_loss(f_s.detach().bfloat16(), f_t.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(REFERENCE["distinct"][0], rel=5e-2)
