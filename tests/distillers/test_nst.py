"""NST against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, by running ``distiller_zoo/NST.py::NSTLoss``
on the stage lists of ``stages()`` below and summing its per-stage list, as ``helper/loops.py``
does with ``feat[1:-1]``. Only the numbers are kept here.
"""

from __future__ import annotations

import math

import pytest
import torch

from distillbench.distillers.base import Batch
from distillbench.distillers.nst import NST, nst_loss
from distillbench.errors import ConfigError
from distillbench.models import ModelOutput, create_model, probe_shapes

SHAPES = {
    "same_size": ([(2, 3, 8, 8), (2, 4, 4, 4), (2, 5, 2, 2)], [(2, 6, 8, 8), (2, 7, 4, 4), (2, 2, 2, 2)]),
    # Student taller at stage 1, teacher taller at stage 2, sizes that do not divide at stage 3,
    # and a fourth teacher stage that the reference's zip drops.
    "cross": ([(2, 3, 8, 8), (2, 4, 4, 4), (2, 3, 7, 7)], [(2, 5, 4, 4), (2, 3, 8, 8), (2, 2, 3, 3), (2, 4, 2, 2)]),
}

# case: (summed loss, per-stage losses, per student stage: (first 4 gradient entries, sum of |grad|))
REFERENCE = {
    "same_size": (
        2.2865202725685405,
        [1.0473210541153781, 0.8292584418789215, 0.4099407765742409],
        [([0.0024147201105656014, 0.0016726186840019062, 0.0005404577912776105, -0.0006222361353858969],
          0.36009149638109955),
         ([0.02166995461101662, 0.002430439605359703, -0.015453426081103647, -0.026793185435346492],
          1.381969443695868),
         ([0.002221538516341659, -0.017106338226913292, -0.022720656778138656, -0.013315709190816795],
          1.5130425405962633)],
    ),
    "cross": (
        4.254696780231458,
        [1.2102611382673165, 1.6403610212858444, 1.4040746206782975],
        [([-0.0037496061750857956, -0.0037496061750857956, -0.010818767289405964, -0.010818767289405964],
          4.779568625615666),
         ([0.010543572676946208, -0.005365398002975353, -0.014653801634237434, -0.013227812093145403],
          1.0778271901959515),
         ([-0.004719115339239924, -0.004719115339239924, -0.013857303156265597, -0.009138187817025674],
          2.343171520150089)],
    ),
    # "same_size" with student stage 1's channel 1 set to zero everywhere (a dead ReLU channel):
    # normalize's eps keeps it finite and its gradient is zero.
    "dead_channel": (
        2.1735036358908992,
        None,
        [([0.0029316477525481574, 0.00210839425111679, 0.0008361011048314271, -0.0005067390109571822],
          0.32452109753544156),
         ([0.02166995461101662, 0.002430439605359703, -0.015453426081103647, -0.026793185435346492],
          1.381969443695868),
         ([0.002221538516341659, -0.017106338226913292, -0.022720656778138656, -0.013315709190816795],
          1.5130425405962633)],
    ),
}


def pattern(shape: tuple[int, ...], phase: float, freq: float) -> torch.Tensor:
    n = math.prod(shape)
    return torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase).reshape(shape)


def stages(case: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    s_shapes, t_shapes = SHAPES["same_size" if case == "dead_channel" else case]
    g_s = [pattern(s, 0.2 + i, 0.37 + 0.05 * i) for i, s in enumerate(s_shapes)]
    g_t = [pattern(s, 1.7 + i, 0.61 + 0.03 * i) for i, s in enumerate(t_shapes)]
    if case == "dead_channel":
        g_s[0][:, 1] = 0
    return [g.requires_grad_() for g in g_s], g_t


def wrap(maps: list[torch.Tensor], stem_value: float = 0.0, pooled_value: float = 0.0) -> ModelOutput:
    """Stage maps between a stem and a pooled vector, the is_feat layout the distiller slices."""
    b = maps[0].shape[0]
    stem = torch.full((b, 2, 8, 8), stem_value, dtype=torch.float64)
    pooled = torch.full((b, 5), pooled_value, dtype=torch.float64)
    return ModelOutput(torch.zeros(b, 10, dtype=torch.float64), [stem, *maps, pooled])


def batch() -> Batch:
    return Batch(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), torch.arange(2))


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_loss_and_gradients_equal_reference(case):
    want_loss, want_stages, want_grads = REFERENCE[case]
    g_s, g_t = stages(case)
    distiller = NST(weight=1.0)
    distiller.setup(wrap(g_s), wrap(g_t), torch.zeros(0))
    loss = distiller(wrap(g_s), wrap(g_t), batch(), 1)["nst"]
    loss.backward()
    assert loss.item() == pytest.approx(want_loss, rel=1e-9)
    for g, (first, abs_sum) in zip(g_s, want_grads, strict=True):
        assert g.grad.flatten()[:4].tolist() == pytest.approx(first, rel=1e-7)
        assert g.grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9)
    if want_stages is not None:
        per_stage = [nst_loss(s.detach(), t).item() for s, t in zip(g_s, g_t, strict=False)]
        assert per_stage == pytest.approx(want_stages, rel=1e-9)
    if case == "dead_channel":
        assert g_s[0].grad[:, 1].abs().max().item() == 0.0


def test_the_term_is_weighted_and_named():
    g_s, g_t = stages("same_size")
    terms = NST()(wrap(g_s), wrap(g_t), batch(), 1)
    assert list(terms) == ["nst"]
    assert terms["nst"].item() == pytest.approx(50.0 * REFERENCE["same_size"][0], rel=1e-9)


def test_stem_and_pooled_vector_are_not_distilled():
    g_s, g_t = stages("same_size")
    loss = NST(weight=1.0)(wrap(g_s, 1.0, -3.0), wrap(g_t, 5.0, 2.0), batch(), 1)["nst"]
    assert loss.item() == pytest.approx(REFERENCE["same_size"][0], rel=1e-12)


def test_extra_teacher_stages_are_dropped_like_zip_does():
    g_s, g_t = stages("cross")
    with_extra = NST(weight=1.0)(wrap(g_s), wrap(g_t), batch(), 1)["nst"]
    without = NST(weight=1.0)(wrap(g_s), wrap(g_t[:3]), batch(), 1)["nst"]
    assert with_extra.item() == without.item()


def test_the_teacher_self_term_is_detached_like_the_reference():
    # With a teacher that requires grad, the reference's gradient reaches it through the cross
    # term only (d loss / d teacher stage: first 2 entries, sum of |grad|, "same_size" inputs).
    want = [([0.00013510070828761988, 0.0003911459976544838], 0.34375485924338617),
            ([0.020003272054496053, 0.011555930041731863], 1.297006721990912),
            ([0.03765921048010201, -0.021177513645453533], 0.4968228101273625)]
    g_s, g_t = stages("same_size")
    teacher = [g.requires_grad_() for g in g_t]
    NST(weight=1.0)(wrap(g_s), wrap(teacher), batch(), 1)["nst"].backward()
    for g, (first, abs_sum) in zip(teacher, want, strict=True):
        assert g.grad.flatten()[:2].tolist() == pytest.approx(first, rel=1e-7)
        assert g.grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9)


def test_identical_maps_give_zero():
    g_s, _ = stages("same_size")
    maps = [g.detach() for g in g_s]
    assert NST()(wrap(maps), wrap(maps), batch(), 1)["nst"].item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape"),
    [((2, 3, 4, 8), (2, 3, 4, 4)), ((2, 3, 8, 8), (2, 3, 4, 2))],
)
def test_non_square_maps_that_the_reference_cannot_pair_are_refused_at_setup(student_shape, teacher_shape):
    student, teacher = wrap([torch.zeros(student_shape)]), wrap([torch.zeros(teacher_shape)])
    with pytest.raises(ConfigError, match=r"NST cannot pair student feats\[1\]"):
        NST().setup(student, teacher, torch.zeros(0))


def test_setup_and_loss_on_a_real_cross_architecture_pair():
    torch.manual_seed(0)
    student_net, teacher_net = create_model("MobileNetV2", num_classes=100), create_model("vgg8", num_classes=100)
    student, teacher = probe_shapes(student_net, (2, 3, 32, 32)), probe_shapes(teacher_net, (2, 3, 32, 32))
    distiller = NST()
    distiller.setup(student, teacher, torch.zeros(0))
    assert distiller.extra_parameter_count() == 0
    x = torch.sin(torch.arange(2 * 3 * 32 * 32, dtype=torch.float32)).reshape(2, 3, 32, 32)
    s_feats, s_logits = student_net(x, is_feat=True)
    with torch.no_grad():
        t_feats, t_logits = teacher_net(x, is_feat=True)
    loss = distiller(ModelOutput(s_logits, list(s_feats)), ModelOutput(t_logits, list(t_feats)), batch(), 1)["nst"]
    assert torch.isfinite(loss) and loss.item() > 0


def test_loss_is_float32_for_half_precision_features():
    g_s, g_t = stages("same_size")
    loss = nst_loss(g_s[0].detach().bfloat16(), g_t[0].bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(REFERENCE["same_size"][1][0], rel=2e-2)
