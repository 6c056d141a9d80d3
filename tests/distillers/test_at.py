"""AT against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, by running ``distiller_zoo/AT.py::Attention``
(p=2) on the stage lists of ``stages()`` below and summing its per-stage list, as
``helper/loops.py`` does with ``feat[1:-1]``. Only the numbers are kept here.
"""

from __future__ import annotations

import math

import pytest
import torch

from distillbench.distillers.attention import AT, at_loss, check_stage_pairs
from distillbench.distillers.base import Batch
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
        0.08265462441861074,
        [0.0009475112842130497, 0.009635048213147122, 0.07207206492125057],
        [([-2.6287144538723957e-05, -9.156318957074065e-06, 6.905974577645066e-05, 9.019503579034227e-05],
          0.015293087293643298),
         ([0.0009970387294705352, -0.0005336511438249215, -0.0018086648955523556, -0.0014481210822739243],
          0.08802804679008099),
         ([0.02690553909172947, -0.004076700980161871, -4.5843130224718515e-05, -0.002036016301571105],
          0.5311668639575426)],
    ),
    "cross": (
        0.07481814174006422,
        [0.008162129636494651, 0.030142719092312843, 0.03651329301125673],
        [([0.003060921734016833, 0.003060921734016833, 0.0024921300437979006, 0.0024921300437979006],
          1.0670298531762425),
         ([0.001700574187988676, 0.0002585970444580655, -0.0029477708857849052, 0.0005570337786454618],
          0.15105610862605662),
         ([0.0010414157513615762, 0.0010414157513615762, 0.002508274937833569, 0.001466859186471993],
          0.6291146352539075)],
    ),
}


def pattern(shape: tuple[int, ...], phase: float, freq: float) -> torch.Tensor:
    n = math.prod(shape)
    return torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase).reshape(shape)


def stages(case: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    s_shapes, t_shapes = SHAPES[case]
    g_s = [pattern(s, 0.2 + i, 0.37 + 0.05 * i).requires_grad_() for i, s in enumerate(s_shapes)]
    g_t = [pattern(s, 1.7 + i, 0.61 + 0.03 * i) for i, s in enumerate(t_shapes)]
    return g_s, g_t


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
    distiller = AT(weight=1.0)
    distiller.setup(wrap(g_s), wrap(g_t), torch.zeros(0))
    loss = distiller(wrap(g_s), wrap(g_t), batch(), 1)["at"]
    loss.backward()
    assert loss.item() == pytest.approx(want_loss, rel=1e-9)
    for g, (first, abs_sum) in zip(g_s, want_grads, strict=True):
        assert g.grad.flatten()[:4].tolist() == pytest.approx(first, rel=1e-7)
        assert g.grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9)
    per_stage = [at_loss(s.detach(), t).item() for s, t in zip(g_s, g_t, strict=False)]
    assert per_stage == pytest.approx(want_stages, rel=1e-9)


def test_the_term_is_weighted_and_named():
    g_s, g_t = stages("same_size")
    terms = AT()(wrap(g_s), wrap(g_t), batch(), 1)
    assert list(terms) == ["at"]
    assert terms["at"].item() == pytest.approx(1000.0 * REFERENCE["same_size"][0], rel=1e-9)


def test_stem_and_pooled_vector_are_not_distilled():
    g_s, g_t = stages("same_size")
    loss = AT(weight=1.0)(wrap(g_s, 1.0, -3.0), wrap(g_t, 5.0, 2.0), batch(), 1)["at"]
    assert loss.item() == pytest.approx(REFERENCE["same_size"][0], rel=1e-12)


def test_extra_teacher_stages_are_dropped_like_zip_does():
    g_s, g_t = stages("cross")
    with_extra = AT(weight=1.0)(wrap(g_s), wrap(g_t), batch(), 1)["at"]
    without = AT(weight=1.0)(wrap(g_s), wrap(g_t[:3]), batch(), 1)["at"]
    assert with_extra.item() == without.item()


def test_identical_maps_give_zero():
    g_s, _ = stages("same_size")
    maps = [g.detach() for g in g_s]
    assert AT()(wrap(maps), wrap(maps), batch(), 1)["at"].item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape"),
    [((2, 3, 4, 8), (2, 3, 4, 4)), ((2, 3, 8, 8), (2, 3, 4, 2))],
)
def test_non_square_maps_that_the_reference_cannot_pair_are_refused_at_setup(student_shape, teacher_shape):
    student, teacher = wrap([torch.zeros(student_shape)]), wrap([torch.zeros(teacher_shape)])
    with pytest.raises(ConfigError, match=r"AT cannot pair student feats\[1\]"):
        AT().setup(student, teacher, torch.zeros(0))


def test_networks_without_stage_maps_are_refused_at_setup():
    empty = ModelOutput(torch.zeros(2, 10), [torch.zeros(2, 4, 8, 8), torch.zeros(2, 4)])
    with pytest.raises(ConfigError, match="feats\\[1:-1\\]"):
        check_stage_pairs("AT", empty, empty)


def test_setup_and_loss_on_a_real_cross_architecture_pair():
    torch.manual_seed(0)
    student_net, teacher_net = create_model("MobileNetV2", num_classes=100), create_model("vgg8", num_classes=100)
    student, teacher = probe_shapes(student_net, (2, 3, 32, 32)), probe_shapes(teacher_net, (2, 3, 32, 32))
    distiller = AT()
    distiller.setup(student, teacher, torch.zeros(0))
    assert distiller.extra_parameter_count() == 0
    x = torch.sin(torch.arange(2 * 3 * 32 * 32, dtype=torch.float32)).reshape(2, 3, 32, 32)
    s_feats, s_logits = student_net(x, is_feat=True)
    with torch.no_grad():
        t_feats, t_logits = teacher_net(x, is_feat=True)
    loss = distiller(ModelOutput(s_logits, list(s_feats)), ModelOutput(t_logits, list(t_feats)), batch(), 1)["at"]
    assert torch.isfinite(loss) and loss.item() > 0


def test_loss_is_float32_for_half_precision_features():
    g_s, g_t = stages("same_size")
    loss = at_loss(g_s[2].detach().bfloat16(), g_t[2].bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(REFERENCE["same_size"][1][2], rel=2e-2)
