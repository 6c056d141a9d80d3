"""SP against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, by running
``distiller_zoo/SP.py::Similarity`` on ``[feat_s]``, ``[feat_t]`` from ``maps()`` below and
summing its one-element list, as ``helper/loops.py`` does with ``feat[-2]``. Only the numbers
are kept here.
"""

from __future__ import annotations

import math

import pytest
import torch

from distillbench.distillers.base import Batch
from distillbench.distillers.similarity import SP, similarity_matrix, sp_loss
from distillbench.models import ModelOutput

# case: (loss, d loss / d student map: first 6 entries, sum of |grad|)
REFERENCE = {
    "signed": (
        0.4291814092265872,
        [-0.003623592010272933, -0.0025510047699723766, -0.0011331510013604183, 0.0004380694394340314,
         0.0019499992366777074, 0.00319800578509701],
        0.3394698989927176,
    ),
    # Sample 2 of the student map is all zero (a dead sample). Its Gram row is zero, so row
    # normalisation divides by eps = 1e-12 and the sample receives a ~1e12 gradient in the
    # reference; the loss itself stays finite.
    "dead_sample": (
        0.3737746781620732,
        [-0.003380873944104368, -0.002212316780872163, -0.0007443329197960888, 0.0008243929101508216,
         0.0022815410271107687, 0.0034298932692440787],
        1262772763341.0886,
    ),
}


def pattern(shape: tuple[int, ...], phase: float, freq: float) -> torch.Tensor:
    n = math.prod(shape)
    return torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase).reshape(shape)


def maps(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    f_s = pattern((4, 3, 4, 4), 0.4, 0.37)
    if case == "dead_sample":
        f_s[2] = 0
    return f_s.requires_grad_(), pattern((4, 5, 2, 2), 2.3, 0.83)


def wrap(last_map: torch.Tensor, fill: float = 0.0) -> ModelOutput:
    """``last_map`` at feats[-2]; the stem, an earlier stage and the pooled vector are filler."""
    b = last_map.shape[0]
    filler = torch.full((b, 2, 8, 8), fill, dtype=torch.float64)
    pooled = torch.full((b, 6), fill, dtype=torch.float64)
    return ModelOutput(torch.zeros(b, 10, dtype=torch.float64), [filler, filler, last_map, pooled])


def batch(b: int = 4) -> Batch:
    return Batch(torch.zeros(b, 3, 32, 32), torch.zeros(b, dtype=torch.long), torch.arange(b))


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_loss_and_gradient_equal_reference(case):
    want_loss, want_first, want_abs_sum = REFERENCE[case]
    f_s, f_t = maps(case)
    loss = SP(weight=1.0)(wrap(f_s), wrap(f_t), batch(), 1)["sp"]
    loss.backward()
    assert loss.shape == ()
    assert loss.item() == pytest.approx(want_loss, rel=1e-9)
    assert f_s.grad.flatten()[:6].tolist() == pytest.approx(want_first, rel=1e-7)
    assert f_s.grad.abs().sum().item() == pytest.approx(want_abs_sum, rel=1e-9)


def test_the_term_is_weighted_and_named():
    f_s, f_t = maps("signed")
    terms = SP()(wrap(f_s), wrap(f_t), batch(), 1)
    assert list(terms) == ["sp"]
    assert terms["sp"].item() == pytest.approx(3000.0 * REFERENCE["signed"][0], rel=1e-9)


def test_only_the_last_spatial_map_is_distilled():
    f_s, f_t = maps("signed")
    loss = SP(weight=1.0)(wrap(f_s, fill=1.5), wrap(f_t, fill=-2.0), batch(), 1)["sp"]
    assert loss.item() == pytest.approx(REFERENCE["signed"][0], rel=1e-12)


def test_gram_rows_are_normalised_not_the_whole_matrix():
    f_s, _ = maps("signed")
    g = similarity_matrix(f_s.detach())
    torch.testing.assert_close(g.norm(dim=1), torch.ones(4, dtype=torch.float64))
    assert not torch.allclose(g, g.T)


def test_identical_maps_give_zero_and_channel_counts_may_differ():
    f_s, f_t = maps("signed")
    assert sp_loss(f_s.detach(), f_s.detach()).item() == 0.0
    assert sp_loss(f_s.detach(), f_t).item() > 0


def test_loss_is_float32_for_half_precision_features():
    f_s, f_t = maps("signed")
    loss = sp_loss(f_s.detach().bfloat16(), f_t.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(REFERENCE["signed"][0], rel=2e-2)
