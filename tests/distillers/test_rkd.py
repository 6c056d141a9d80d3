"""RKD against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, by running
``distiller_zoo/RKD.py::RKDLoss`` on the pooled vectors of ``features()`` below: the total with
the default ``w_d=25, w_a=50`` and its gradient, and the two parts alone with
``RKDLoss(1, 0)`` and ``RKDLoss(0, 1)``. Only the numbers are kept here.
"""

from __future__ import annotations

import math

import pytest
import torch

from distillbench.distillers.base import Batch
from distillbench.distillers.rkd import RKD, normalized_distances, pairwise_distances, rkd_losses
from distillbench.models import ModelOutput

# case: (total, distance part, angle part, d total / d f_s row 0, sum |grad|)
REFERENCE = {
    "distinct": (
        11.375789509936942, 0.11658412502594716, 0.16922372768576527,
        [-0.08254254975844603, -0.15282511150288175, -0.2024235113404095, -0.22462483852963216,
         -0.21642424758662338, -0.17893165002480654, -0.11722149303844889],
        5.010257378525541,
    ),
    # Student samples 1 and 3 coincide. Their distance is clamped to sqrt(1e-12) (no gradient
    # through the clamp), and F.normalize divides their zero difference by eps = 1e-12, so the
    # angle term sends ~1e12 gradients to the two samples in the reference.
    "coincident": (
        10.594368361072695, 0.13689875051476397, 0.14343799196407192,
        [-0.3079526211468593, -0.29132831128836995, -0.23527408117988968, -0.1473766079043204,
         -0.03953240212382313, 0.07366232882925162, 0.17688720914089334],
        5984042718071.865,
    ),
}


def wave(shape: tuple[int, ...], freq: float, phase: float, scale: float = 1.0) -> torch.Tensor:
    n = math.prod(shape)
    return (scale * torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase)).reshape(shape)


def features(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    f_s = wave((5, 7), 0.37, 0.1, 2.0)
    if case == "coincident":
        f_s[3] = f_s[1]
    return f_s.requires_grad_(), wave((5, 9), 0.61, 0.4, 3.0)


def output(pooled: torch.Tensor) -> ModelOutput:
    b = pooled.shape[0]
    return ModelOutput(torch.zeros(b, 10, dtype=pooled.dtype), [torch.zeros(b, 2, 4, 4, dtype=pooled.dtype), pooled])


def batch(b: int = 5) -> Batch:
    return Batch(torch.zeros(b, 3, 32, 32), torch.zeros(b, dtype=torch.long), torch.arange(b))


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_loss_and_gradient_equal_reference(case):
    total, part_d, part_a, grad_row0, grad_abs = REFERENCE[case]
    f_s, f_t = features(case)
    terms = RKD()(output(f_s), output(f_t), batch(), 1)
    assert list(terms) == ["rkd_distance", "rkd_angle"]
    assert terms["rkd_distance"].item() == pytest.approx(25 * part_d, rel=1e-9)
    assert terms["rkd_angle"].item() == pytest.approx(50 * part_a, rel=1e-9)
    loss = terms["rkd_distance"] + terms["rkd_angle"]
    loss.backward()
    assert loss.item() == pytest.approx(total, rel=1e-9)
    assert f_s.grad[0].tolist() == pytest.approx(grad_row0, rel=1e-7)
    assert f_s.grad.abs().sum().item() == pytest.approx(grad_abs, rel=1e-6)


def test_weight_scales_both_terms():
    f_s, f_t = features("distinct")
    terms = RKD(weight=2.0)(output(f_s), output(f_t), batch(), 1)
    assert sum(terms.values()).item() == pytest.approx(2 * REFERENCE["distinct"][0], rel=1e-9)


def test_teacher_side_builds_no_graph():
    f_s, f_t = features("distinct")
    f_t.requires_grad_()
    loss_d, loss_a = rkd_losses(f_s, f_t)
    (loss_d + loss_a).backward()
    assert f_t.grad is None
    assert f_s.grad is not None


def test_distances_are_normalised_by_the_mean_off_diagonal_distance():
    """The zero diagonal is left out of the mean, so the B*(B-1) off-diagonal entries average 1."""
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]], dtype=torch.float64)
    dist = pairwise_distances(x)
    assert dist.flatten().tolist() == pytest.approx([0, 5, 10, 5, 0, 5, 10, 5, 0])
    normalized = normalized_distances(x)
    assert normalized.sum().item() == pytest.approx(6.0)
    assert normalized[0, 2].item() == pytest.approx(10 / (40 / 6))


def test_loss_ignores_the_scale_of_either_side():
    f_s, f_t = features("distinct")
    base = rkd_losses(f_s, f_t)
    scaled = rkd_losses(7.5 * f_s, 0.01 * f_t)
    assert [t.item() for t in scaled] == pytest.approx([t.item() for t in base], rel=1e-9)


def test_one_sample_batch_is_refused():
    with pytest.raises(ValueError, match="at least two"):
        rkd_losses(torch.ones(1, 4), torch.ones(1, 4))


def test_half_precision_features_give_a_float32_loss():
    f_s, f_t = features("distinct")
    loss_d, loss_a = rkd_losses(f_s.detach().bfloat16(), f_t.bfloat16())
    assert loss_d.dtype == loss_a.dtype == torch.float32
    assert (25 * loss_d + 50 * loss_a).item() == pytest.approx(REFERENCE["distinct"][0], rel=5e-2)
