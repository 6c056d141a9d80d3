"""AB against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, by running ``distiller_zoo/AB.py::ABLoss``
(``feat_num`` = 4, margin 1) on the output of ``models/util.py::Connector`` (train mode, as
``helper/pretrain.py::init`` trains it), summed as ``init`` sums the loss group, for the stage
maps of ``stage_maps()`` below, with every connector parameter set by ``fill()`` (the parameter
names are the same in both implementations). The four stage pairs exercise the identity
connector and the stride-2, transposed and 1x1 conv connectors. Only the numbers are kept here.

The init-stage wiring follows ``train_student.py`` (``--distill abound``): the init stage trains
the connector and ``model_s.get_feat_modules()`` at the base lr; the main stage has
``loss_kd = 0`` and the connector is not in the main optimiser.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from distillbench.distillers.ab import AB, ConvConnector, ab_loss, boundary_loss
from distillbench.distillers.base import Batch
from distillbench.engine.init_stage import make_init_optimizer
from distillbench.errors import ConfigError
from distillbench.models import ModelOutput, create_model, probe_shapes

B = 3
STUDENT_SHAPES = [(B, 4, 8, 8), (B, 6, 8, 8), (B, 5, 2, 2), (B, 6, 4, 4)]
TEACHER_SHAPES = [(B, 4, 8, 8), (B, 5, 4, 4), (B, 7, 4, 4), (B, 3, 4, 4)]

REF_LOSS = 1.0357878043974602
# d loss / d student stage map (pre-connector): first 4 entries and sum of |grad|, per stage.
REF_GRAD_S = [
    ([-0.00010223989666933022, 0.0, 0.0, 0.0], 0.23551767551180147),
    ([-5.630796712093082e-05, 1.2525900609484944e-05, -5.425745344173045e-05, -0.000221252176765739],
     0.12089809363233255),
    ([-0.0017624943916647873, 0.0008460849485938285, 0.0013565836210229468, -0.0017899406670718108],
     0.3180374106423107),
    ([-0.000991202297049426, -0.0013371575874944236, -0.00031007553092304364, -0.0005715524763010246],
     0.1775820435185245),
]
# Connector parameters: first 2 gradient entries and sum of |grad| (conv biases: see the test).
REF_PARAMS = {
    "connectors.1.bn.bias": ([0.0019301554062974551, 0.0032590520340277985], 0.030629755156688886),
    "connectors.1.bn.weight": ([0.027108925708142478, 0.02530213467468478], 0.12840245833439579),
    "connectors.1.conv.weight": ([-0.00010221004443072273, 6.594243585070042e-05], 0.09340338206334584),
    "connectors.2.bn.bias": ([-0.008865299256966105, -0.023201480566814002], 0.08153187560835082),
    "connectors.2.bn.weight": ([0.013297862780375588, 0.027354880286363455], 0.24971296723974798),
    "connectors.2.conv.weight": ([0.0005663465305845906, -0.0005722021355980835], 1.8982588421762954),
    "connectors.3.bn.bias": ([0.029438481079336557, 0.044978934889940564], 0.08652700829372041),
    "connectors.3.bn.weight": ([0.07335342338576861, 0.05483256952115962], 0.2014505664443456),
    "connectors.3.conv.weight": ([-0.010098740387806768, -0.015532144443836673], 0.293076341898136),
}
# Connector BatchNorm running_mean sum and running_var sum after the step.
REF_BN = {
    "connectors.1.bn": (0.05032073509908283, 16.147991954326805),
    "connectors.2.bn": (0.17672896008987102, 6.528943889433901),
    "connectors.3.bn": (-0.11960390413548543, 3.296556722198619),
}


def pattern(shape: tuple[int, ...], phase: float, freq: float = 0.37, scale: float = 1.0) -> torch.Tensor:
    n = math.prod(shape)
    return (scale * torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase)).reshape(shape)


def fill(module: torch.nn.Module) -> None:
    """Parameters in name order get sine patterns of increasing phase; BN weights are centred on 1."""
    with torch.no_grad():
        for k, (name, p) in enumerate(sorted(module.named_parameters())):
            p.copy_(pattern(tuple(p.shape), k, freq=0.53, scale=0.5))
            if name.endswith("bn.weight"):
                p.add_(1.0)


def stage_maps() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Values up to +-2, so every region of the margin loss is hit on both sides of zero."""
    s = [pattern(shape, 0.3 + i, freq=0.41, scale=2.0).requires_grad_() for i, shape in enumerate(STUDENT_SHAPES)]
    t = [pattern(shape, 1.1 + i, freq=0.67, scale=2.0) for i, shape in enumerate(TEACHER_SHAPES)]
    return s, t


def output(maps: list[torch.Tensor]) -> ModelOutput:
    """Stem first and pooled vector last around the stage maps, as in the is_feat list."""
    b, dtype = maps[0].shape[0], maps[0].dtype
    return ModelOutput(torch.zeros(b, 10, dtype=dtype), [torch.zeros(b, 2, 2, 2, dtype=dtype), *maps,
                                                         torch.zeros(b, 7, dtype=dtype)])


def batch() -> Batch:
    return Batch(torch.zeros(B, 3, 32, 32), torch.zeros(B, dtype=torch.long), torch.arange(B))


def built(**kwargs) -> AB:
    distiller = AB(**kwargs)
    distiller.setup(output([torch.zeros(s) for s in STUDENT_SHAPES]), output([torch.zeros(t) for t in TEACHER_SHAPES]),
                    torch.zeros(0))
    return distiller


def test_init_loss_and_gradients_equal_reference():
    distiller = built().double().train()
    fill(distiller)
    s, t = stage_maps()
    loss = distiller.init_loss(output(s), output(t), batch())["ab"]
    loss.backward()
    assert loss.item() == pytest.approx(REF_LOSS, rel=1e-9)
    for f_s, (first, abs_sum) in zip(s, REF_GRAD_S, strict=True):
        assert f_s.grad.flatten()[:4].tolist() == pytest.approx(first, rel=1e-7)
        assert f_s.grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9)
    params = dict(distiller.named_parameters())
    assert sorted(params) == sorted([*REF_PARAMS, "connectors.1.conv.bias", "connectors.2.conv.bias",
                                     "connectors.3.conv.bias"])
    for name, (first, abs_sum) in REF_PARAMS.items():
        assert params[name].grad.flatten()[:2].tolist() == pytest.approx(first, rel=1e-7), name
        assert params[name].grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9), name
    # Train-mode BatchNorm cancels the conv bias: its gradient vanishes in both implementations.
    for i in (1, 2, 3):
        assert params[f"connectors.{i}.conv.bias"].grad.abs().max().item() < 1e-12
    modules = dict(distiller.named_modules())
    for name, (mean_sum, var_sum) in REF_BN.items():
        assert modules[name].running_mean.sum().item() == pytest.approx(mean_sum, rel=1e-9)
        assert modules[name].running_var.sum().item() == pytest.approx(var_sum, rel=1e-9)


def test_connectors_follow_the_reference_branches_and_have_no_relu():
    distiller = built()
    kinds = [type(c) for c in distiller.connectors]
    assert kinds == [torch.nn.Identity, ConvConnector, ConvConnector, ConvConnector]
    convs = [c.conv for c in distiller.connectors[1:]]
    assert type(convs[0]) is torch.nn.Conv2d and convs[0].stride == (2, 2) and convs[0].kernel_size == (3, 3)
    assert type(convs[1]) is torch.nn.ConvTranspose2d and convs[1].kernel_size == (4, 4)
    assert type(convs[2]) is torch.nn.Conv2d and convs[2].kernel_size == (1, 1)
    fill(distiller)
    distiller.float().train()
    for connect, s_shape, t_shape in zip(distiller.connectors, STUDENT_SHAPES, TEACHER_SHAPES, strict=True):
        out = connect(pattern(s_shape, 0.3).float())
        assert out.shape == t_shape
        assert (out < 0).any(), "the connector must end in BatchNorm, not ReLU"


def test_margin_loss_regions_by_hand():
    source = torch.tensor([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], dtype=torch.float64)
    # Teacher off (<= 0, zero included): (s + 1)^2 wherever s > -1.
    assert boundary_loss(source, torch.zeros(6, dtype=torch.float64), 1.0).item() == pytest.approx(15.5)
    # Teacher on: (s - 1)^2 wherever s <= 1.
    assert boundary_loss(source, torch.ones(6, dtype=torch.float64), 1.0).item() == pytest.approx(15.5)
    # Margin 2, teacher off: (s + 2)^2 wherever s > -2.
    wide = boundary_loss(source, -torch.ones(6, dtype=torch.float64), 2.0)
    assert wide.item() == pytest.approx(1 + 2.25 + 6.25 + 9 + 16)


def test_stage_weights_halve_towards_the_stem_and_scale_by_3_over_1000_per_sample():
    s = [pattern((2, 3, 4, 4), 0.1, scale=2.0)] * 3
    t = [pattern((2, 3, 4, 4), 0.7)] * 3
    single = boundary_loss(s[0], t[0], 1.0).item()
    assert ab_loss(s, t).item() == pytest.approx((0.25 + 0.5 + 1.0) * single / 2 * 3 / 1000, rel=1e-12)


def test_init_stage_trains_connectors_and_student_feature_stages_at_the_base_lr():
    student, teacher = create_model("wrn_16_1", num_classes=10), create_model("wrn_16_2", num_classes=10)
    distiller = AB()
    distiller.setup(probe_shapes(student, (2, 3, 32, 32), preact=True),
                    probe_shapes(teacher, (2, 3, 32, 32), preact=True), torch.zeros(0))
    modules = distiller.init_modules(student)
    trained = {id(p) for p in modules.parameters()}
    expected = {id(p) for p in distiller.connectors.parameters()}
    expected |= {id(p) for p in student.get_feat_modules().parameters()}
    assert trained == expected
    assert distiller.connectors and all(isinstance(c, ConvConnector) for c in distiller.connectors)
    assert not {id(p) for p in student.fc.parameters()} & trained
    assert not {id(p) for p in student.bn1.parameters()} & trained  # the final BN is not a feature module
    optimizer = make_init_optimizer(partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4), modules,
                                    distiller.init_lr)
    assert optimizer.param_groups[0]["lr"] == 0.05
    assert len(optimizer.param_groups[0]["params"]) == len(trained)
    assert distiller.init_lr(0.01) == 0.01


def test_connectors_are_frozen_for_the_main_stage():
    distiller = built()
    size = distiller.extra_parameter_count()
    assert size > 0 and all(p.requires_grad for p in distiller.parameters())
    distiller.end_init_stage()
    assert [p for p in distiller.parameters() if p.requires_grad] == []
    distiller.end_init_stage()  # also called on resume
    assert [p for p in distiller.parameters() if p.requires_grad] == []
    # The reported size still counts the connectors: the init stage trained them.
    assert distiller.extra_parameter_count() == size


def test_main_stage_term_is_a_constant_zero_that_leaves_the_ce_gradient_alone():
    distiller = built()
    distiller.end_init_stage()
    logits = pattern((B, 10), 0.2).float().requires_grad_()
    s, t = stage_maps()
    terms = distiller(ModelOutput(logits, output(s).feats), output(t), batch(), 1)
    assert list(terms) == ["ab"]
    assert terms["ab"].item() == 0.0 and terms["ab"].dtype == torch.float32 and not terms["ab"].requires_grad
    ce = F.cross_entropy(logits, torch.tensor([1, 2, 3]))
    torch.stack([ce, terms["ab"]]).sum().backward()
    with_term = logits.grad.clone()
    logits.grad = None
    F.cross_entropy(logits, torch.tensor([1, 2, 3])).backward()
    assert torch.equal(with_term, logits.grad)
    assert all(f.grad is None for f in s)
    bf16 = distiller(ModelOutput(logits.detach().bfloat16(), output(s).feats), output(t), batch(), 1)["ab"]
    assert bf16.dtype == torch.float32


def test_reads_pre_activation_features_and_takes_init_epochs_from_the_config():
    assert AB.preact is True
    assert AB().init_epochs == 30
    assert AB(init_epochs=1).init_epochs == 1
    with pytest.raises(ConfigError, match="init_epochs"):
        AB(init_epochs=-1)


# Stage maps feats[1:-1] (C, H) of methods.md §3.2 for a 32x32 input.
STAGES = {
    "resnet8x4": [(64, 32), (128, 16), (256, 8)], "resnet32x4": [(64, 32), (128, 16), (256, 8)],
    "wrn_40_1": [(16, 32), (32, 16), (64, 8)], "wrn_40_2": [(32, 32), (64, 16), (128, 8)],
    "MobileNetV2": [(12, 16), (16, 8), (48, 4), (160, 2)], "vgg13": [(128, 16), (256, 8), (512, 4), (512, 4)],
}


def table_output(arch: str) -> ModelOutput:
    return output([torch.zeros(2, c, h, h) for c, h in STAGES[arch]])


@pytest.mark.parametrize(
    ("student", "teacher", "params"),
    # methods.md §7, AB column.
    [("resnet8x4", "resnet32x4", 0), ("wrn_40_1", "wrn_40_2", 11_424), ("MobileNetV2", "vgg13", 1_345_152)],
)
def test_connector_sizes_match_the_reference_pairs(student, teacher, params):
    distiller = AB()
    distiller.setup(table_output(student), table_output(teacher), torch.zeros(0))
    assert distiller.extra_parameter_count() == params


def test_unequal_stage_counts_are_refused_at_setup():
    # RepDistiller's Connector asserts equal lengths; pairs are never cut to the shorter list.
    s = output([torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 4, 4)])
    t = output([torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 2, 2)])
    with pytest.raises(ConfigError, match="student has 2 and the teacher 3"):
        AB().setup(s, t, torch.zeros(0))


def test_unmappable_sizes_are_refused_at_setup():
    s = output([torch.zeros(2, 4, 2, 2)])
    t = output([torch.zeros(2, 8, 8, 8)])
    with pytest.raises(ConfigError, match=r"AB's connector .*\(4, 2, 2\).*\(8, 8, 8\)"):
        AB().setup(s, t, torch.zeros(0))


def test_init_loss_before_setup_is_an_error():
    s, t = stage_maps()
    with pytest.raises(RuntimeError, match="setup"):
        AB().init_loss(output(s), output(t), batch())
