"""OFD against mdistiller (megvii-research/mdistiller, commit a08d46f).

The pinned numbers were computed once, in float64, by running ``mdistiller/distillers/OFD.py``
(``init_ofd_modules`` for the connectors and margins, then ``ofd_loss``, connectors in train mode) on the
stage maps of ``stages()`` and the teacher BNs of ``teacher_bns()`` below, with every connector parameter
set by ``fill_connectors()`` (same parameter names in both implementations). In the case where the teacher
has one stage more, the reference was handed the BNs of the stages that pair up, as its ImageNet ResNet's
``get_bn_before_relu`` does; given all of them it indexes margins from the first stage and fails on the
channel count. Only the numbers are kept here.
"""

from __future__ import annotations

import math

import pytest
import torch

from distillbench.distillers.base import Batch
from distillbench.distillers.ofd import OFD, bn_margins, partial_l2
from distillbench.errors import ConfigError
from distillbench.models import ModelOutput, create_model, probe_shapes

SHAPES = {
    "same_count": ([(2, 3, 8, 8), (2, 4, 4, 4), (2, 5, 2, 2)], [(2, 4, 8, 8), (2, 6, 4, 4), (2, 3, 2, 2)]),
    # The teacher has an extra first stage (dropped) and larger maps (pooled to the student's size).
    "teacher_extra_stage": ([(2, 3, 4, 4), (2, 6, 2, 2)], [(2, 3, 16, 16), (2, 4, 8, 8), (2, 5, 4, 4)]),
}

# case: (loss, per student stage: (first 4 gradient entries, sum of |grad|),
#        per connector: {parameter: (first 2 gradient entries, sum of |grad|)}, per stage: margins,
#        sum over connectors of the BN running_mean)
REFERENCE = {
    "same_count": (
        279.46044539735124,
        [
            ([-0.2788643375859464, 0.2868369824874648, 0.6781083753949747, 0.8208966073456676], 259.9836549135037),
            ([-0.7266838814366985, 0.9836674124294399, 1.533749487137418, 1.454793287215018], 108.21443515439788),
            ([14.692514179037252, -9.89477051097261, -10.24619036497497, 2.520603556024099], 331.32961731756563),
        ],
        [
            {
                "0.weight": ([1.4037009072355104, 1.7351433621943442], 6.712318296671491),
                "1.bias": ([14.172130396268617, 15.625264816165664], 52.041542379383856),
                "1.weight": ([44.51990568835497, 39.999492945105715], 142.31373121507923),
            },
            {
                "0.weight": ([0.2308585235657996, 0.15447549639003233], 7.5572226832556435),
                "1.bias": ([-7.129556608658859, -10.670759029258686], 32.33315483201843),
                "1.weight": ([5.234693201274731, 10.95498677505086], 81.5533104932365),
            },
            {
                "0.weight": ([-0.8653819121662139, 1.272788302347474], 469.5843409305186),
                "1.bias": ([5.2444574834070625, 0.16517013260649716], 12.91984731258048),
                "1.weight": ([4.26520270432009, 4.1512774588762], 21.040224675038544),
            },
        ],
        [
            [-3.8629660606384277, -1.1809908151626587, -1.0839742422103882, -1.163326382637024],
            [
                -0.5155724287033081,
                -1.2552887201309204,
                -1.0268628597259521,
                -0.6996821165084839,
                -0.8866291046142578,
                -0.3939717710018158,
            ],
            [-0.3902752101421356, -1.062984824180603, -0.8394492268562317],
        ],
        0.00020794142369997008,
    ),
    "teacher_extra_stage": (
        84.74294733532311,
        [
            (
                [0.16615466313440047, -0.08086442074057851, -0.20698899733502757, -0.07534830628394246],
                14.405491498071537,
            ),
            (
                [-0.40664531624392874, -0.08780391984328897, 0.3025260002386475, 0.0019433972054607174],
                128.59801130517323,
            ),
        ],
        [
            {
                "0.weight": ([1.6640059899974189, 0.6806224289787957], 4.594027863638105),
                "1.bias": ([7.592818183094011, 7.557479802822107], 26.43146855577267),
                "1.weight": ([19.2060308550183, 20.174054337617743], 67.6550655837793),
            },
            {
                "0.weight": ([-0.9836844786471373, -0.6408975191620212], 54.69491371559006),
                "1.bias": ([-2.142100906956972, -1.538545452384647], 5.4451789953558425),
                "1.weight": ([4.354384812169287, 1.7418673427861644], 28.69131841930741),
            },
        ],
        [
            [-0.5155724287033081, -1.2552887201309204, -1.0268628597259521, -0.8845071196556091],
            [-0.3902752101421356, -1.062984824180603, -0.5851378440856934, -0.7221612334251404, -0.38864201307296753],
        ],
        -0.0011037073976187938,
    ),
}


def pattern(shape: tuple[int, ...], phase: float, freq: float, scale: float = 1.0) -> torch.Tensor:
    n = math.prod(shape)
    return (scale * torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase)).reshape(shape)


def stages(case: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    s_shapes, t_shapes = SHAPES[case]
    g_s = [pattern(s, 0.2 + i, 0.37 + 0.05 * i).requires_grad_() for i, s in enumerate(s_shapes)]
    g_t = [pattern(s, 1.7 + i, 0.61 + 0.03 * i, scale=1.5) for i, s in enumerate(t_shapes)]
    return g_s, g_t


def teacher_bns(case: str) -> list[torch.nn.BatchNorm2d]:
    """One BN per teacher stage: weights around 1 (one negative), biases in [-1, 1] and one at 4, where
    a negative pre-activation is rarer than 0.1% and the margin falls back to -3 |weight|."""
    bns = []
    for i, shape in enumerate(SHAPES[case][1]):
        bn = torch.nn.BatchNorm2d(shape[1]).double()
        with torch.no_grad():
            bn.weight.copy_(1.0 + pattern((shape[1],), 0.5 + i, 1.3, scale=0.6))
            bn.weight[-1] = -0.8
            bn.bias.copy_(pattern((shape[1],), 2.0 + i, 0.9))
            bn.bias[0] = 4.0
        bns.append(bn)
    return bns


def fill_connectors(connectors: torch.nn.ModuleList) -> None:
    """Each connector's parameters in name order get sine patterns; BN weights are centred on 1."""
    with torch.no_grad():
        for i, conn in enumerate(connectors):
            for k, (name, p) in enumerate(sorted(conn.named_parameters())):
                p.copy_(pattern(tuple(p.shape), k + 3 * i, 0.53, scale=0.5))
                if name == "1.weight":
                    p.add_(1.0)


def wrap(maps: list[torch.Tensor], bns: list[torch.nn.BatchNorm2d] | None = None) -> ModelOutput:
    """Stage maps between a stem and a pooled vector, the is_feat layout the distiller slices."""
    b = maps[0].shape[0]
    stem = torch.zeros(b, 2, 8, 8, dtype=torch.float64)
    out = ModelOutput(torch.zeros(b, 10, dtype=torch.float64), [stem, *maps, torch.zeros(b, 5, dtype=torch.float64)])
    if bns is not None:
        out.bn_before_relu = lambda: bns
    return out


def built(case: str, weight: float = 1.0) -> OFD:
    g_s, g_t = stages(case)
    distiller = OFD(weight=weight)
    distiller.setup(wrap(g_s), wrap(g_t, teacher_bns(case)), torch.zeros(0))
    distiller.double().train()
    fill_connectors(distiller.connectors)
    return distiller


def batch() -> Batch:
    return Batch(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), torch.arange(2))


@pytest.mark.parametrize("case", sorted(SHAPES))
def test_loss_and_gradients_equal_reference(case):
    want_loss, want_grads, want_params, want_margins, want_rm = REFERENCE[case]
    distiller = built(case)
    g_s, g_t = stages(case)
    loss = distiller(wrap(g_s), wrap(g_t), batch(), 1)["ofd"]
    loss.backward()
    assert loss.item() == pytest.approx(want_loss, rel=1e-9)
    for g, (first, abs_sum) in zip(g_s, want_grads, strict=True):
        assert g.grad.flatten()[:4].tolist() == pytest.approx(first, rel=1e-7, abs=1e-12)
        assert g.grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9)
    for conn, want in zip(distiller.connectors, want_params, strict=True):
        params = dict(conn.named_parameters())
        for name, (first, abs_sum) in want.items():
            assert params[name].grad.flatten()[:2].tolist() == pytest.approx(first, rel=1e-7, abs=1e-12), name
            assert params[name].grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9), name
    for margin, want in zip(distiller.margins(), want_margins, strict=True):
        # Both implementations round the margins to float32 (the reference through torch.FloatTensor).
        assert margin.flatten().tolist() == pytest.approx(want, rel=1e-7)
    running_mean = sum(conn[1].running_mean.sum().item() for conn in distiller.connectors)
    assert running_mean == pytest.approx(want_rm, rel=1e-9)


def test_the_term_is_weighted_and_named():
    distiller = built("same_count", weight=1e-3)
    g_s, g_t = stages("same_count")
    terms = distiller(wrap(g_s), wrap(g_t), batch(), 1)
    assert list(terms) == ["ofd"]
    assert terms["ofd"].item() == pytest.approx(1e-3 * REFERENCE["same_count"][0], rel=1e-9)


def test_margin_is_the_mean_of_the_negative_part_of_a_gaussian():
    torch.manual_seed(0)
    weight, bias = torch.tensor([1.0, 2.0, 0.5, -1.5]), torch.tensor([0.0, -1.0, 0.3, 5.0])
    margins = bn_margins(weight, bias)
    for s, m, got in zip(weight.abs(), bias, margins, strict=True):
        if torch.special.ndtr(-m / s) > 1e-3:
            x = torch.randn(2_000_000, dtype=torch.float64) * s + m
            assert got.item() == pytest.approx(x[x < 0].mean().item(), abs=5e-3)
        else:
            assert got.item() == pytest.approx(-3 * s.item())


def test_partial_l2_ignores_what_a_relu_would_erase():
    margin = torch.full((1, 1, 1, 1), -0.5)
    teacher = torch.tensor([-2.0, -2.0, -0.2, -0.2, 1.0]).view(1, 1, 1, 5)
    student = torch.tensor([-3.0, 0.5, -0.4, 0.3, 0.0]).view(1, 1, 1, 5)
    # below the margin and the teacher: 0; above the margin: (0.5+0.5)^2; below a negative teacher: 0;
    # above it: (0.3+0.2)^2; positive teacher: (0-1)^2.
    assert partial_l2(student, teacher, margin).item() == pytest.approx(1.0 + 0.25 + 1.0)


def test_connectors_and_margins_are_sized_from_the_real_teacher():
    torch.manual_seed(0)
    teacher_net, student_net = create_model("resnet32x4"), create_model("resnet8x4")
    with torch.no_grad():
        for bn in teacher_net.get_bn_before_relu():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1.0, 1.0)
    teacher = probe_shapes(teacher_net, (2, 3, 32, 32), preact=True)
    student = probe_shapes(student_net, (2, 3, 32, 32), preact=True)
    distiller = OFD()
    distiller.setup(student, teacher, torch.zeros(0))
    # 1x1 conv + BN per stage, 64/128/256 channels each way.
    assert distiller.extra_parameter_count() == sum(c * c + 2 * c for c in (64, 128, 256))
    for margin, bn in zip(distiller.margins(), teacher_net.get_bn_before_relu(), strict=True):
        assert margin.flatten().tolist() == pytest.approx(bn_margins(bn.weight, bn.bias).tolist())
    assert {f"margin{i}" for i in range(3)} <= set(distiller.state_dict())


def test_teachers_without_bn_before_relu_are_refused_at_setup():
    g_s, g_t = stages("same_count")
    with pytest.raises(ConfigError, match="get_bn_before_relu"):
        OFD().setup(wrap(g_s), wrap(g_t), torch.zeros(0))
    shuffle = probe_shapes(create_model("ShuffleV1"), (2, 3, 32, 32), preact=True)
    with pytest.raises(ConfigError, match="ShuffleNetV1"):
        OFD().setup(shuffle, shuffle, torch.zeros(0))


def test_forward_before_setup_is_an_error():
    g_s, g_t = stages("same_count")
    with pytest.raises(RuntimeError, match="setup"):
        OFD()(wrap(g_s), wrap(g_t), batch(), 1)


def test_loss_is_float32_for_half_precision_features():
    g_s, g_t = stages("same_count")
    margin = bn_margins(teacher_bns("same_count")[0].weight, teacher_bns("same_count")[0].bias).view(1, -1, 1, 1)
    f_s, f_t = torch.zeros_like(g_t[0]).copy_(g_t[0] * 0.5), g_t[0]
    loss = partial_l2(f_s.bfloat16(), f_t.bfloat16(), margin)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(partial_l2(f_s, f_t, margin).item(), rel=2e-2)
