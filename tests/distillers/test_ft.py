"""FT against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, with RepDistiller's own modules:

* init stage: ``models/util.py::Paraphraser`` (k = 0.5, no BN) reconstructing the teacher map,
  loss ``nn.MSELoss()(rec, f_t)`` as ``helper/pretrain.py::init`` computes it for ``factor``;
* main stage: ``distiller_zoo/FT.py::FactorTransfer`` (p1 = 2, p2 = 1) on
  ``models/util.py::Translator`` (train mode) of the student map and
  ``Paraphraser(f_t, is_factor=True)`` of the teacher map, as ``helper/loops.py`` wires it.

Inputs are ``pattern()`` waves; every parameter was set by ``fill()`` in name order. Our
translator has RepDistiller's parameter names; our paraphraser has no placeholder modules, so its
convs sit at Sequential indices 0, 2, 4 where RepDistiller's sit at 0, 3, 6 (the name order, and so
``fill()``, is the same). Only the numbers are kept here.

Init-stage wiring (``train_student.py``, ``helper/pretrain.py``): only the paraphraser is trained,
at lr 0.01 for resnet*/wrn_* students and the student's base lr otherwise; the main optimiser
holds the translator but not the paraphraser; beta = 200 (``scripts/run_cifar_distill.sh``).
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from hydra.utils import instantiate

from distillbench.distillers.base import Batch
from distillbench.distillers.ft import FT, Paraphraser, factor_loss
from distillbench.engine.init_stage import make_init_optimizer
from distillbench.errors import ConfigError
from distillbench.models import ModelOutput, create_model
from tests.helpers import compose_config

TEACHER_INIT_SHAPE = (2, 6, 4, 4)
REF_INIT_LOSS = 562.2755694604117
# Paraphraser parameters: first 2 gradient entries and sum of |grad|.
REF_INIT_PARAMS = {
    "decoder.0.bias": ([-23.44052288092451, 21.32329824754497], 48.44883546423282),
    "decoder.0.weight": ([-17.820682314383493, -51.00163116307296], 9774.07080857734),
    "decoder.2.bias": ([7.381655017951375, -2.4204107153101777], 44.455191455349464),
    "decoder.2.weight": ([321.76680090253757, 310.0657488575412], 27033.607076283733),
    "decoder.4.bias": ([4.162445397219078, 3.225816673441156], 21.702283697818817),
    "decoder.4.weight": ([31.8897450687858, 36.49476074327781], 12026.539666682183),
    "encoder.0.bias": ([-0.13295385002838045, 72.66942741309275], 307.13704913028073),
    "encoder.0.weight": ([-6.166479454806108, -14.170141647421813], 13731.955718905994),
    "encoder.2.bias": ([5.359538133165559, 26.638814343537085], 70.0791147139853),
    "encoder.2.weight": ([60.79604376270819, 65.04770804174386], 26020.040306379713),
    "encoder.4.bias": ([38.10478292284357, 18.253674903095288], 65.33760443031106),
    "encoder.4.weight": ([1.7753301763775189, -0.013343244755126604], 7104.180757921547),
}

# case: (student map, teacher map, factor loss (beta = 1), d loss/d f_s (first 4, sum |.|),
#        {translator parameter: (first 2 gradient entries, sum |grad|)}, [(BN running_mean sum, running_var sum)])
REFERENCE = {
    "student_taller": (
        (2, 5, 8, 8), (2, 6, 4, 4), 0.2276438592606792,
        ([0.00089269621028404, 0.0015814629005970657, 0.0018565307715893032, 0.0011963717575238736],
         0.7390874150677573),
        {
            "encoder.0.weight": ([0.008046599989128999, 0.007470499619886351], 1.1654484784836856),
            "encoder.1.bias": ([-0.012657329515616777, 0.0035892438522063335], 0.042923454732348126),
            "encoder.1.weight": ([-0.013633893197616046, 0.012475259652748384], 0.05075290499101554),
            "encoder.3.weight": ([-0.0019641563692258572, -0.0016977706361409786], 0.41097183398672266),
            "encoder.4.bias": ([0.005699730824468641, 0.010243204742529915], 0.018186516083991203),
            "encoder.4.weight": ([-0.006659332596224087, 0.011544633226414493], 0.02346661626215891),
            "encoder.6.weight": ([0.0035944455870663733, 0.003081339294924646], 0.5616917194837394),
            "encoder.7.bias": ([-0.02415137447826967, -0.022622815872868567], 0.10774817920749026),
            "encoder.7.weight": ([-0.053451204642737976, -0.021354650637972362], 0.1442964153092323),
        },
        [(0.16525471228800695, 4.876078544624749), (-0.22164869622182481, 4.487447545501078),
         (0.04412564934546093, 3.573557931913073)],
    ),
    "teacher_taller": (
        (2, 5, 2, 2), (2, 6, 4, 4), 0.35739962066929143,
        ([0.8691009196913695, 0.6906686362618785, -0.13376697256907957, -0.5535568252756156], 22.48460640656826),
        {
            "encoder.0.weight": ([0.057505287604899175, 0.40872025216647845], 32.07496043773755),
            "encoder.1.bias": ([-0.35675206355166966, -0.5284822669056721], 2.646144673518307),
            "encoder.1.weight": ([-0.23476121722463894, -0.33865358065950524], 2.44042380435921),
            "encoder.3.weight": ([0.013282556835142265, -0.41871286543078945], 26.350720526305373),
            "encoder.4.bias": ([0.1948027708043263, 0.1941140436645955], 1.0108087591941575),
            "encoder.4.weight": ([0.2286797100909016, 0.464236920732463], 1.2076134842318222),
            "encoder.6.weight": ([0.024626177563215973, -0.004412895280033114], 9.605283851902715),
            "encoder.7.bias": ([0.5845345813412338, -0.06214782177486483], 1.3696873431409906),
            "encoder.7.weight": ([0.5835329124154405, -0.04361559662044553], 1.2825177985711602),
        },
        [(0.1725334897458188, 5.011451349173664), (-0.12673362756042675, 2.70624490741208),
         (0.11426564825867344, 2.9045213539927506)],
    ),
    "same_size": (
        (2, 4, 4, 4), (2, 6, 4, 4), 0.1742861761401796,
        ([0.0006228545024240645, 0.0008468425506406983, 0.0005996513637358139, 0.00037370932292283876],
         0.15564292725483933),
        {
            "encoder.0.weight": ([-0.0017020220097150591, 0.0001383575162121283], 0.5296703933019111),
            "encoder.1.bias": ([-0.014596116823753377, 0.016562029657057185], 0.09050986003661204),
            "encoder.1.weight": ([-0.057841372545778154, 0.01566574095545942], 0.16622193885589207),
            "encoder.3.weight": ([-0.006090055439926844, -0.008326981502096724], 0.8119362073320093),
            "encoder.4.bias": ([-0.01717236703564879, -0.014363159922281911], 0.03884906285252488),
            "encoder.4.weight": ([-0.034090141962114365, -0.0062938530510446775], 0.07486549180358947),
            "encoder.6.weight": ([-9.17298630568053e-05, -0.0026455937707139873], 0.5125079524805044),
            "encoder.7.bias": ([-0.01724978719873696, 0.04198946900465505], 0.05943987150269938),
            "encoder.7.weight": ([-0.018115345638624852, 0.04316582402736834], 0.06308518002618457),
        },
        [(0.8525327506817307, 15.69974447274824), (-0.08250414445945531, 3.5970028850060025),
         (0.03822441679919342, 4.443191257311554)],
    ),
}


def pattern(shape: tuple[int, ...], phase: float, freq: float = 0.37, scale: float = 1.0) -> torch.Tensor:
    n = math.prod(shape)
    return (scale * torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase)).reshape(shape)


def fill(module: torch.nn.Module) -> None:
    """Parameters in name order get sine patterns of increasing phase; BN weights are centred on 1."""
    bn_weights = {f"{name}.weight" for name, m in module.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    with torch.no_grad():
        for k, (name, p) in enumerate(sorted(module.named_parameters())):
            p.copy_(pattern(tuple(p.shape), k, freq=0.53, scale=0.5))
            if name in bn_weights:
                p.add_(1.0)


def output(last_map: torch.Tensor) -> ModelOutput:
    """An is_feat list whose feats[-2] is ``last_map``."""
    b, dtype = last_map.shape[0], last_map.dtype
    return ModelOutput(torch.zeros(b, 10, dtype=dtype), [torch.zeros(b, 2, 2, 2, dtype=dtype), last_map,
                                                         torch.zeros(b, 7, dtype=dtype)])


def batch() -> Batch:
    return Batch(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), torch.arange(2))


def built(student_shape, teacher_shape, **kwargs) -> FT:
    distiller = FT(**kwargs)
    distiller.setup(output(torch.zeros(student_shape)), output(torch.zeros(teacher_shape)), torch.zeros(0))
    return distiller


def test_init_loss_and_paraphraser_gradients_equal_reference():
    distiller = built((2, 5, 4, 4), TEACHER_INIT_SHAPE).double()
    fill(distiller.paraphraser)
    f_t = pattern(TEACHER_INIT_SHAPE, 0.7, freq=0.29, scale=1.5)
    terms = distiller.init_loss(output(torch.zeros(2, 5, 4, 4, dtype=torch.float64)), output(f_t), batch())
    assert list(terms) == ["ft_reconstruction"]
    terms["ft_reconstruction"].backward()
    assert terms["ft_reconstruction"].item() == pytest.approx(REF_INIT_LOSS, rel=1e-9)
    params = dict(distiller.paraphraser.named_parameters())
    assert sorted(params) == sorted(REF_INIT_PARAMS)
    for name, (first, abs_sum) in REF_INIT_PARAMS.items():
        assert params[name].grad.flatten()[:2].tolist() == pytest.approx(first, rel=1e-7), name
        assert params[name].grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9), name
    assert all(p.grad is None for p in distiller.translator.parameters())


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_main_loss_and_gradients_equal_reference(case):
    s_shape, t_shape, want_loss, (want_g, want_g_abs), want_params, want_bn = REFERENCE[case]
    distiller = built(s_shape, t_shape, weight=1.0).double().train()
    fill(distiller.paraphraser)
    fill(distiller.translator)
    distiller.end_init_stage()
    f_s = pattern(s_shape, 0.2, freq=0.31, scale=1.3).requires_grad_()
    f_t = pattern(t_shape, 0.9, freq=0.43, scale=1.3)
    loss = distiller(output(f_s), output(f_t), batch(), 1)["ft"]
    loss.backward()
    assert loss.item() == pytest.approx(want_loss, rel=1e-9)
    assert f_s.grad.flatten()[:4].tolist() == pytest.approx(want_g, rel=1e-7)
    assert f_s.grad.abs().sum().item() == pytest.approx(want_g_abs, rel=1e-9)
    params = dict(distiller.translator.named_parameters())
    for name, (first, abs_sum) in want_params.items():
        assert params[name].grad.flatten()[:2].tolist() == pytest.approx(first, rel=1e-7), name
        assert params[name].grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-9), name
    # Train-mode BatchNorm cancels the conv biases: their gradients vanish in both implementations.
    for name in ("encoder.0.bias", "encoder.3.bias", "encoder.6.bias"):
        assert params[name].grad.abs().max().item() < 1e-12
    bns = [m for m in distiller.translator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn, (mean_sum, var_sum) in zip(bns, want_bn, strict=True):
        assert bn.running_mean.sum().item() == pytest.approx(mean_sum, rel=1e-9)
        assert bn.running_var.sum().item() == pytest.approx(var_sum, rel=1e-9)
    assert all(p.grad is None for p in distiller.paraphraser.parameters())


def test_the_main_term_is_weighted_and_named():
    s_shape, t_shape, want_loss, *_ = REFERENCE["same_size"]
    distiller = built(s_shape, t_shape).double().train()
    assert distiller.weight == 200.0
    fill(distiller.paraphraser)
    fill(distiller.translator)
    terms = distiller(output(pattern(s_shape, 0.2, freq=0.31, scale=1.3)),
                      output(pattern(t_shape, 0.9, freq=0.43, scale=1.3)), batch(), 1)
    assert list(terms) == ["ft"]
    assert terms["ft"].item() == pytest.approx(200.0 * want_loss, rel=1e-9)


def test_init_stage_trains_only_the_paraphraser():
    student = create_model("resnet8", num_classes=10)
    distiller = built((2, 16, 8, 8), (2, 32, 8, 8), student_arch="resnet8")
    modules = distiller.init_modules(student)
    assert modules is distiller.paraphraser
    trained = {id(p) for p in modules.parameters()}
    assert not trained & {id(p) for p in student.parameters()}
    assert not trained & {id(p) for p in distiller.translator.parameters()}
    optimizer = make_init_optimizer(partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4), modules,
                                    distiller.init_lr)
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert len(optimizer.param_groups[0]["params"]) == 12


@pytest.mark.parametrize(
    ("arch", "base_lr", "init_lr"),
    [("resnet8x4", 0.05, 0.01), ("resnet110", 0.05, 0.01), ("wrn_40_1", 0.05, 0.01), ("vgg8", 0.05, 0.05),
     ("ResNet50", 0.05, 0.05), ("MobileNetV2", 0.01, 0.01), ("ShuffleV2", 0.01, 0.01), (None, 0.05, 0.05)],
)
def test_init_lr_follows_the_reference_rule(arch, base_lr, init_lr):
    assert FT(student_arch=arch).init_lr(base_lr) == init_lr


@pytest.mark.parametrize(("student", "init_lr"), [("resnet8x4", 0.01), ("wrn_16_2", 0.01), ("vgg8", 0.05),
                                                  ("MobileNetV2", 0.01)])
def test_the_config_passes_the_student_architecture(student, init_lr, tmp_path):
    cfg = compose_config(["distiller=ft", f"student={student}"], run_dir=tmp_path)
    distiller = instantiate(cfg.distiller.method)
    assert distiller.student_arch == student
    assert distiller.init_lr(cfg.optim.lr) == init_lr
    assert distiller.init_epochs == 30 and distiller.weight == 200.0


def test_paraphraser_is_frozen_and_translator_trained_in_the_main_stage():
    distiller = built((2, 5, 4, 4), (2, 6, 4, 4))
    translator = list(distiller.translator.parameters())
    distiller.end_init_stage()
    assert all(not p.requires_grad for p in distiller.paraphraser.parameters())
    distiller.end_init_stage()  # also called on resume
    main_trainable = [p for p in distiller.parameters() if p.requires_grad]
    assert [id(p) for p in main_trainable] == [id(p) for p in translator]
    # The reported size counts both modules: each trains in one of the stages.
    assert distiller.extra_parameter_count() == sum(p.numel() for p in distiller.parameters())


def test_teacher_factor_carries_no_graph_even_before_the_paraphraser_is_frozen():
    distiller = built((2, 5, 4, 4), (2, 6, 4, 4)).train()
    f_s = pattern((2, 5, 4, 4), 0.2).float().requires_grad_()
    distiller(output(f_s), output(pattern((2, 6, 4, 4), 0.9).float()), batch(), 1)["ft"].backward()
    assert all(p.grad is None for p in distiller.paraphraser.parameters())
    assert f_s.grad is not None


def test_paraphraser_has_no_batchnorm_and_leaky_relus_everywhere():
    para = Paraphraser(8, 0.5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in para.modules())
    assert [type(m) for m in para.decoder][1::2] == [torch.nn.LeakyReLU] * 3
    assert all(m.negative_slope == 0.1 for m in para.modules() if isinstance(m, torch.nn.LeakyReLU))
    assert para.encoder[4].out_channels == 4 and para.decoder[4].out_channels == 8
    x = pattern((2, 8, 4, 4), 0.3).float()
    assert torch.equal(para.train()(x), para.eval()(x))


@pytest.mark.parametrize(
    ("c_s", "c_t", "para", "trans"),
    # methods.md §7: resnet32x4 -> resnet8x4, wrn_40_2 -> wrn_40_1, vgg13 -> MobileNetV2, resnet32x4 -> ShuffleV1.
    [(256, 256, 2_065_536, 1_033_728), (64, 128, 516_672, 111_168), (160, 512, 8_259_840, 1_190_880),
     (960, 256, 2_065_536, 9_551_424)],
)
def test_module_sizes_match_the_reference_pairs(c_s, c_t, para, trans):
    distiller = built((2, c_s, 4, 4), (2, c_t, 4, 4))
    assert sum(p.numel() for p in distiller.paraphraser.parameters()) == para
    assert sum(p.numel() for p in distiller.translator.parameters()) == trans
    distiller.end_init_stage()
    assert distiller.extra_parameter_count() == para + trans


def test_a_non_spatial_feats_minus_2_is_refused():
    flat = ModelOutput(torch.zeros(2, 10), [torch.zeros(2, 4, 4, 4), torch.zeros(2, 6), torch.zeros(2, 6)])
    with pytest.raises(ConfigError, match="feats\\[-2\\]"):
        FT().setup(flat, output(torch.zeros(2, 6, 4, 4)), torch.zeros(0))


def test_forward_before_setup_is_an_error():
    with pytest.raises(RuntimeError, match="setup"):
        FT()(output(torch.zeros(2, 4, 4, 4)), output(torch.zeros(2, 4, 4, 4)), batch(), 1)


def test_loss_is_float32_for_half_precision_factors():
    f_s, f_t = pattern((2, 3, 4, 4), 0.1), pattern((2, 5, 4, 4), 0.6)
    loss = factor_loss(f_s.bfloat16(), f_t.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(factor_loss(f_s, f_t).item(), rel=2e-2)
