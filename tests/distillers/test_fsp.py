"""FSP against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, by running ``distiller_zoo/FSP.py::FSP`` on
the maps of ``maps()`` below (the stem and three stages, i.e. ``feat[:-1]``), the loss group summed
as ``helper/pretrain.py::init`` does for ``fsp``. The map sizes make the reference pool the lower
map of a pair in one place and the upper map in another. Only the numbers are kept here.

Wiring (``train_student.py``, ``--distill fsp``): the init stage trains
``model_s.get_feat_modules()`` at the base lr; the main stage has ``loss_kd = 0``; different channel
counts at any position raise in the reference's constructor.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from distillbench.distillers.base import Batch
from distillbench.distillers.fsp import FSP, fsp_loss, fsp_matrix
from distillbench.engine.init_stage import make_init_optimizer
from distillbench.errors import ConfigError
from distillbench.models import ModelOutput, create_model, probe_shapes

STUDENT_SHAPES = [(2, 3, 8, 8), (2, 4, 8, 8), (2, 5, 4, 4), (2, 6, 2, 2)]
TEACHER_SHAPES = [(2, 3, 4, 4), (2, 4, 8, 8), (2, 5, 8, 8), (2, 6, 2, 2)]

REF_LOSS = 0.6899430197230343
# d loss / d student map: first 4 entries and sum of |grad|, per map.
REF_GRAD_S = [
    ([0.0013882521190298116, 0.0017187584273656567, 0.0019587425246866343, 0.002095565118145071],
     0.5583185040087884),
    ([0.001769089176519448, 0.0017559822138289113, 0.0015953839733705262, 0.0014221133429819406],
     0.5593983154429905),
    ([-0.006526646019142912, -0.005128119651481505, -0.004206620071175455, -0.0030714237140543037],
     0.6268828853265079),
    ([-0.002139330394206789, -0.006758536402846273, -0.009943966427092298, -0.006707085022782555],
     0.35792800016361326),
]


def pattern(shape: tuple[int, ...], phase: float, freq: float = 0.37, scale: float = 1.0) -> torch.Tensor:
    n = math.prod(shape)
    return (scale * torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase)).reshape(shape)


def maps() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    s = [pattern(shape, 0.5 + i, freq=0.23, scale=1.2).requires_grad_() for i, shape in enumerate(STUDENT_SHAPES)]
    t = [pattern(shape, 1.7 + i, freq=0.37, scale=1.2) for i, shape in enumerate(TEACHER_SHAPES)]
    return s, t


def output(feature_maps: list[torch.Tensor]) -> ModelOutput:
    """``feature_maps`` as feats[:-1], with the pooled vector after them."""
    b, dtype = feature_maps[0].shape[0], feature_maps[0].dtype
    return ModelOutput(torch.zeros(b, 10, dtype=dtype), [*feature_maps, torch.zeros(b, 7, dtype=dtype)])


def batch() -> Batch:
    return Batch(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), torch.arange(2))


def probe(arch: str) -> ModelOutput:
    torch.manual_seed(0)
    return probe_shapes(create_model(arch, num_classes=100), (2, 3, 32, 32))


def test_init_loss_and_gradients_equal_reference():
    s, t = maps()
    distiller = FSP()
    distiller.setup(output(s), output(t), torch.zeros(0))
    terms = distiller.init_loss(output(s), output(t), batch())
    assert list(terms) == ["fsp"]
    terms["fsp"].backward()
    assert terms["fsp"].item() == pytest.approx(REF_LOSS, rel=1e-9)
    for f_s, (first, abs_sum) in zip(s, REF_GRAD_S, strict=True):
        assert f_s.grad.flatten()[:4].tolist() == pytest.approx(first, rel=1e-7)
        assert f_s.grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9)


def test_fsp_matrix_is_upper_by_lower_channels_averaged_over_positions():
    bottom = torch.stack([torch.full((4, 4), 2.0), torch.full((4, 4), -1.0)]).unsqueeze(0)  # 1 x 2 x 4 x 4
    top = torch.arange(3, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 2, 2)  # taller map pooled
    g = fsp_matrix(bottom, top)
    assert g.shape == (1, 3, 2)
    assert torch.allclose(g[0], torch.tensor([[0.0, 0.0], [2.0, -1.0], [4.0, -2.0]]))


def test_pairs_are_consecutive_maps_and_mean_squared_differences_are_summed():
    s, t = maps()
    s = [f.detach() for f in s]
    by_hand = sum(F.mse_loss(fsp_matrix(s[i], s[i + 1]), fsp_matrix(t[i], t[i + 1])) for i in range(3))
    assert fsp_loss(s, t).item() == pytest.approx(by_hand.item(), rel=1e-12)


def test_init_stage_trains_the_student_feature_modules_at_the_base_lr():
    student = create_model("resnet8", num_classes=10)
    distiller = FSP()
    distiller.setup(probe("resnet8"), probe("resnet20"), torch.zeros(0))
    modules = distiller.init_modules(student)
    trained = {id(p) for p in modules.parameters()}
    assert trained == {id(p) for name, p in student.named_parameters() if not name.startswith("fc.")}
    optimizer = make_init_optimizer(partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4), modules,
                                    distiller.init_lr)
    assert optimizer.param_groups[0]["lr"] == 0.05
    assert list(distiller.parameters()) == []
    distiller.end_init_stage()
    assert distiller.extra_parameter_count() == 0


def test_main_stage_term_is_a_constant_zero_that_leaves_the_ce_gradient_alone():
    s, t = maps()
    distiller = FSP()
    distiller.setup(output(s), output(t), torch.zeros(0))
    logits = pattern((2, 10), 0.2).float().requires_grad_()
    terms = distiller(ModelOutput(logits, output(s).feats), output(t), batch(), 1)
    assert list(terms) == ["fsp"]
    assert terms["fsp"].item() == 0.0 and terms["fsp"].dtype == torch.float32 and not terms["fsp"].requires_grad
    ce = F.cross_entropy(logits, torch.tensor([1, 2]))
    torch.stack([ce, terms["fsp"]]).sum().backward()
    with_term = logits.grad.clone()
    logits.grad = None
    F.cross_entropy(logits, torch.tensor([1, 2])).backward()
    assert torch.equal(with_term, logits.grad)
    assert all(f.grad is None for f in s)


def test_takes_init_epochs_from_the_config_and_reads_post_activation_features():
    assert FSP.preact is False
    assert FSP().init_epochs == 30
    assert FSP(init_epochs=1).init_epochs == 1
    with pytest.raises(ConfigError, match="init_epochs"):
        FSP(init_epochs=-1)


def test_the_experiment_pair_resnet32x4_to_resnet8x4_is_accepted():
    distiller = FSP()
    distiller.setup(probe("resnet8x4"), probe("resnet32x4"), torch.zeros(0))
    assert distiller.init_epochs == 30


def test_a_cross_architecture_pair_is_refused_as_an_na_cell():
    with pytest.raises(ConfigError) as error:
        FSP().setup(probe("MobileNetV2"), probe("vgg8"), torch.zeros(0))
    message = str(error.value)
    assert "[16, 12, 16, 48, 160]" in message and "[64, 128, 256, 512, 512]" in message and "N/A" in message


def test_wrn_40_2_to_wrn_40_1_is_refused_with_both_channel_lists():
    # methods.md §3.2: the same depth, but every width after the stem doubles.
    student = output([torch.zeros(2, c, h, h) for c, h in [(16, 32), (16, 32), (32, 16), (64, 8)]])
    teacher = output([torch.zeros(2, c, h, h) for c, h in [(16, 32), (32, 32), (64, 16), (128, 8)]])
    with pytest.raises(ConfigError, match=r"\[16, 16, 32, 64\].*\[16, 32, 64, 128\].*N/A"):
        FSP().setup(student, teacher, torch.zeros(0))


def test_unequal_map_counts_are_refused():
    s = output([torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 4, 4)])
    t = output([torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 2, 2)])
    with pytest.raises(ConfigError, match=r"\[4, 4\].*\[4, 4, 4\]"):
        FSP().setup(s, t, torch.zeros(0))


def test_loss_is_float32_for_half_precision_maps():
    s, t = maps()
    s = [f.detach() for f in s]
    loss = fsp_loss([f.bfloat16() for f in s], [f.bfloat16() for f in t])
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(fsp_loss(s, t).item(), rel=5e-2)
