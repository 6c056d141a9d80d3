"""FitNet against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, by running ``distiller_zoo/FitNet.py::HintLoss``
on the output of ``models/util.py::ConvReg`` (train mode, as ``train_student.py`` trains it with
the student) for the inputs of ``features()`` below, with every regressor parameter set by
``fill_regressor()`` (same parameter names in both implementations). Each case exercises one of
ConvReg's spatial branches. Only the numbers are kept here.
"""

from __future__ import annotations

import math

import pytest
import torch

from distillbench.distillers.base import Batch
from distillbench.distillers.fitnet import ConvRegressor, FitNet, hint_loss
from distillbench.errors import ConfigError
from distillbench.models import ModelOutput, create_model, probe_shapes

# case: (student map, teacher map, loss, d loss/d f_s (first 4 entries, sum of |.|),
#        {regressor parameter: (first 2 gradient entries, sum of |grad|)}, BN running_mean sum, running_var sum)
REFERENCE = {
    "same_size_1x1": (
        (2, 3, 4, 4), (2, 5, 4, 4), 1.8718874938303742,
        ([0.0010482349193715944, 0.005518715208162818, 0.007831378238037208, 0.004046552054954261],
         1.0647226030014345),
        {"bn.bias": ([0.26435416305188086, 0.2800777774262323], 1.5741751998522688),
         "bn.weight": ([0.31492024366736104, 0.3369022115066636], 1.6343736120147065),
         "conv.weight": ([-0.062436248573624765, -0.03137487664581109], 0.22812899996491917)},
        0.012156636226541631, 4.6931871143998185,
    ),
    "student_twice_as_large": (
        (2, 3, 8, 8), (2, 4, 4, 4), 2.09738885612286,
        ([0.004517027321296176, 0.004157791597056447, -0.0022807672444341703, -0.007324952766770887],
         2.352321400523926),
        {"bn.bias": ([0.31299521507872896, 0.42114270778282126], 1.6127230627133715),
         "bn.weight": ([0.49426407523551397, 0.4224909860749759], 1.7835889201199446),
         "conv.weight": ([-0.020409174898032515, -0.016378346602085914], 0.9795708222078705)},
        0.017281391453062928, 5.266946755976132,
    ),
    "student_half_as_large": (
        (2, 3, 4, 4), (2, 4, 8, 8), 1.9206820362058261,
        ([-0.023430136136832255, -0.010303062875680332, -0.008026716384515058, 0.004608876012905796],
         2.425537952066993),
        {"bn.bias": ([0.301290020031334, 0.38815458916274326], 1.5322207595588138),
         "bn.weight": ([0.34313794018447613, 0.42354038409092853], 1.6672657412296292),
         "conv.weight": ([-0.002492743517013486, -0.00919028178851073], 3.3834573779199086)},
        0.05802201345324252, 3.6632106661997073,
    ),
    "student_larger_3x3_kernel": (
        (2, 3, 6, 6), (2, 4, 4, 4), 1.9648890752114427,
        ([0.010999685590300462, 0.03756591536105871, 0.05905397800283674, 0.029233420157697268],
         4.501683759611303),
        {"bn.bias": ([0.3107756710887891, 0.49906251501900645], 1.612021129944613),
         "bn.weight": ([0.33730887310762514, 0.5255298846686122], 1.712055361688602),
         "conv.weight": ([-0.017850807858913124, -0.06443562563008727], 8.831590439315422)},
        0.056052371788375105, 3.7590701241128004,
    ),
}


def pattern(shape: tuple[int, ...], phase: float, freq: float = 0.37, scale: float = 1.0) -> torch.Tensor:
    n = math.prod(shape)
    return (scale * torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase)).reshape(shape)


def fill_regressor(module: torch.nn.Module) -> None:
    """Parameters in name order get sine patterns of increasing phase; BN weights are centred on 1."""
    with torch.no_grad():
        for k, (name, p) in enumerate(sorted(module.named_parameters())):
            p.copy_(pattern(tuple(p.shape), k, freq=0.53, scale=0.5))
            if name == "bn.weight":
                p.add_(1.0)


def features(student_shape, teacher_shape) -> tuple[torch.Tensor, torch.Tensor]:
    return pattern(student_shape, 0.3).requires_grad_(), pattern(teacher_shape, 1.1, freq=0.71)


def outputs(hint: torch.Tensor, batch: int = 2) -> ModelOutput:
    """A feature list with ``hint`` at index 2, where FitNet reads it by default."""
    stem = torch.zeros(batch, 1, 4, 4, dtype=hint.dtype)
    return ModelOutput(torch.zeros(batch, 10, dtype=hint.dtype), [stem, stem, hint, torch.zeros(batch, 7)])


def built(student_shape, teacher_shape, weight: float = 1.0) -> FitNet:
    distiller = FitNet(weight=weight)
    distiller.setup(outputs(torch.zeros(student_shape)), outputs(torch.zeros(teacher_shape)), torch.zeros(0))
    return distiller


def batch() -> Batch:
    return Batch(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), torch.arange(2))


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_loss_and_gradients_equal_reference(case):
    s_shape, t_shape, want_loss, (want_g, want_g_abs), want_params, want_rm, want_rv = REFERENCE[case]
    distiller = built(s_shape, t_shape).double().train()
    fill_regressor(distiller.regressor)
    f_s, f_t = features(s_shape, t_shape)
    loss = distiller(outputs(f_s), outputs(f_t), batch(), 1)["fitnet"]
    loss.backward()
    assert loss.item() == pytest.approx(want_loss, rel=1e-9)
    assert f_s.grad.flatten()[:4].tolist() == pytest.approx(want_g, rel=1e-7)
    assert f_s.grad.abs().sum().item() == pytest.approx(want_g_abs, rel=1e-9)
    params = dict(distiller.regressor.named_parameters())
    for name, (first, abs_sum) in want_params.items():
        assert params[name].grad.flatten()[:2].tolist() == pytest.approx(first, rel=1e-7), name
        assert params[name].grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9), name
    # Train-mode BatchNorm removes the conv bias, so its gradient vanishes in both implementations.
    assert params["conv.bias"].grad.abs().max().item() < 1e-12
    bn = distiller.regressor.bn
    assert bn.running_mean.sum().item() == pytest.approx(want_rm, rel=1e-9)
    assert bn.running_var.sum().item() == pytest.approx(want_rv, rel=1e-9)


def test_the_term_is_weighted_and_named():
    s_shape, t_shape, want_loss, *_ = REFERENCE["same_size_1x1"]
    distiller = built(s_shape, t_shape, weight=100.0).double()
    fill_regressor(distiller.regressor)
    f_s, f_t = features(s_shape, t_shape)
    terms = distiller(outputs(f_s), outputs(f_t), batch(), 1)
    assert list(terms) == ["fitnet"]
    assert terms["fitnet"].item() == pytest.approx(100.0 * want_loss, rel=1e-9)


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape", "conv", "params"),
    [
        # methods.md §7: resnet32x4 -> resnet8x4, wrn_40_2 -> wrn_40_1, vgg13 -> MobileNetV2,
        # ResNet50 -> MobileNetV2, ResNet50 -> vgg8, resnet32x4 -> ShuffleV1.
        ((2, 128, 16, 16), (2, 128, 16, 16), torch.nn.Conv2d, 16_768),
        ((2, 32, 16, 16), (2, 64, 16, 16), torch.nn.Conv2d, 2_240),
        ((2, 16, 8, 8), (2, 256, 8, 8), torch.nn.Conv2d, 4_864),
        ((2, 16, 8, 8), (2, 512, 16, 16), torch.nn.ConvTranspose2d, 132_608),
        ((2, 256, 8, 8), (2, 512, 16, 16), torch.nn.ConvTranspose2d, 2_098_688),
        ((2, 480, 8, 8), (2, 128, 16, 16), torch.nn.ConvTranspose2d, 983_424),
    ],
)
def test_regressor_size_matches_the_reference_pairs(student_shape, teacher_shape, conv, params):
    distiller = built(student_shape, teacher_shape)
    assert type(distiller.regressor.conv) is conv
    assert distiller.extra_parameter_count() == params
    out = distiller.regressor.eval()(torch.zeros(student_shape))
    assert out.shape == teacher_shape


def test_regressor_ends_in_relu_and_is_trained_with_the_student():
    distiller = built((2, 3, 8, 8), (2, 4, 4, 4)).train()
    fill_regressor(distiller.regressor)
    out = distiller.regressor(pattern((2, 3, 8, 8), 0.3).float())
    assert (out >= 0).all() and (out == 0).any()
    params = list(distiller.parameters())
    assert len(params) == 4 and all(p.requires_grad for p in params)
    assert "regressor.bn.running_mean" in distiller.state_dict()


def test_setup_on_a_real_cross_architecture_pair():
    torch.manual_seed(0)
    student = probe_shapes(create_model("MobileNetV2", num_classes=100), (2, 3, 32, 32))
    teacher = probe_shapes(create_model("vgg8", num_classes=100), (2, 3, 32, 32))
    distiller = FitNet()
    distiller.setup(student, teacher, torch.zeros(0))
    assert distiller.extra_parameter_count() == 4_864


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape"),
    [((2, 8, 4, 4), (2, 8, 16, 16)), ((2, 8, 4, 6), (2, 8, 4, 8)), ((2, 8, 8, 5), (2, 8, 4, 4))],
)
def test_unmappable_sizes_are_refused_at_setup_with_both_shapes(student_shape, teacher_shape):
    # RepDistiller's ConvReg has no branch for the first (it fails with a TypeError) and builds
    # a regressor of the wrong output size for the others.
    with pytest.raises(ConfigError, match=r"\(8, 4, 4\)|\(8, 4, 6\)|\(8, 8, 5\)"):
        ConvRegressor(torch.Size(student_shape), torch.Size(teacher_shape))
    with pytest.raises(ConfigError, match="FitNet"):
        built(student_shape, teacher_shape)


@pytest.mark.parametrize("hint_layer", [3, 7])
def test_a_hint_layer_that_is_not_a_spatial_map_is_refused(hint_layer):
    distiller = FitNet(hint_layer=hint_layer)
    probe = outputs(torch.zeros(2, 4, 4, 4))
    with pytest.raises(ConfigError, match=f"hint_layer={hint_layer}"):
        distiller.setup(probe, probe, torch.zeros(0))


def test_forward_before_setup_is_an_error():
    f = torch.zeros(2, 4, 4, 4)
    with pytest.raises(RuntimeError, match="setup"):
        FitNet()(outputs(f), outputs(f), batch(), 1)


def test_loss_is_float32_for_half_precision_features():
    f_s, f_t = features((2, 3, 4, 4), (2, 3, 4, 4))
    loss = hint_loss(f_s.detach().bfloat16(), f_t.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(torch.nn.functional.mse_loss(f_s, f_t).item(), rel=2e-2)
