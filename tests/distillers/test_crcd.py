"""CRCD against the CRCD repository (github.com/Lechatelia/CRCD, commit f9176f6).

The pinned numbers were computed once, in float64, by running the repository's code on the
inputs, head parameters, memory contents and contrast indices built below:

* ``RELATION``: ``crcd/criterion.py::CRCDLoss`` (with its ``Embed``, ``ContrastLoss`` and
  ``crcd/memory.py::ContrastMemory``), its ``params`` buffer held in float64 so that tau is
  exactly 0.05. ``ContrastMemory.__init__`` moves an unused alias sampler to CUDA; that call was
  stubbed out to run on the CPU (nothing else was changed). Two successive calls for the linear
  heads: the first sets Z, the second runs with Z frozen, the banks as the first call's momentum
  update left them, and relaxed positives. The repository's ``Z_v1``/``memory_v1`` are
  ``relation.teacher.z``/``relation.student.bank`` here.
* ``GRADIENT_ELEMENT``: ``10 * helper/loops.py::get_grad_loss(..., gard_cos_sim)`` on the tiny
  model pair below.
* ``STEP``: the total of ``helper/loops.py::train_distill`` (gamma 1, alpha 0.9, beta 1, its
  ``adjust_mimic_loss_weight(..., '240')`` at the first iteration of epochs 1 and 241 of 250)
  minus the CE term, and its gradients w.r.t. the student's logits, pooled feature and parameters
  and the heads' parameters, with RepDistiller's ``DistillKL`` (commit b84f547; the CRCD script uses it
  without importing it) and, for ``grad_type='crcd'``, a second ``CRCDLoss`` on the gradients.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distillbench.distillers.base import Batch
from distillbench.distillers.crcd import CRCD, RelationContrast
from distillbench.errors import ConfigError
from distillbench.models import ModelOutput
from tests.helpers import compose_config

B, N, K, D, S_DIM, T_DIM, CLASSES = 4, 20, 6, 8, 6, 10, 7

RELATION = {
    ("linear", 1): {
        "loss": 23.602602345547865,
        "grad_f_s_row1": [-0.003886359907428673, -0.02705333040057637, -0.037146068881315504,
                          -0.029286994564437983, -0.00727421139870623, 0.018254025359089057],
        "grad_f_s_abs": 0.7430678154986451,
        "grad_embed_s_abs": [29.422907212032044, 1.601971011036418],
        "grad_embed_t_abs": [37.30919650197686, 2.086288329266533],
        "grad_embed_s_w_00": 0.6577306903020774,
        "grad_embed_t_w_last": 0.6243442739609644,
        "memory_v1_abs": 50.66664767283398,
        "memory_v2_abs": 50.81977286463863,
        "memory_v1_row3": [0.5748942214852197, 0.4937022081050297, 0.04013291065156165, 0.46119335249858256,
                           0.3317078691236272, -0.28802379805684947, 0.06392029599166826, 0.11987986479630441],
        "z1": 7338213.092938781,
        "z2": 910170855.6980913,
    },
    ("linear", 2): {
        "loss": 26.194416873918794,
        "grad_f_s_row1": [0.02014801879198387, -0.0003943035262416045, -0.020746068315724297,
                          -0.031071751048438706, -0.026381194515083035, -0.008941233278219482],
        "grad_f_s_abs": 0.5888408929426598,
        "grad_embed_s_abs": [21.825018649536595, 3.624006988488415],
        "grad_embed_t_abs": [49.30087873088789, 4.224235702051169],
        "grad_embed_s_w_00": 0.29996446225870654,
        "grad_embed_t_w_last": 0.13492680037470295,
        "memory_v1_abs": 49.600254965284805,
        "memory_v2_abs": 50.336569357667976,
        "memory_v1_row3": [0.32033783281742395, 0.39478442908560685, 0.7035565609290226, 0.30769440109316193,
                           -0.02322990223736311, 0.12641570601026625, -0.15821551842736406, -0.33212729362665055],
        "z1": 7338213.092938781,
        "z2": 910170855.6980913,
    },
    ("nonlinear", 1): {
        "loss": 20.06476354895654,
        "grad_f_s_row1": [0.005868124416099369, 0.004108523265561712, 0.00036337040634470356,
                          -0.0035573907394917254, -0.005758949436009112, -0.005177344656560955],
        "grad_f_s_abs": 0.0658412414887715,
        "grad_embed_s_abs": [2.7051537277501962, 0.20379953720309857, 3.0846751143109206, 0.32050578430261134,
                             8.505939229112661, 2.5143120914003485],
        "grad_embed_t_abs": [3.575896671849358, 0.2623035075017027, 15.654728410223697, 1.4235859924094734,
                             71.77817675250682, 16.833558126995886],
        "memory_v1_abs": 50.00265493674396,
        "z1": 5207264.595341078,
        "z2": 15623746.008150673,
    },
    ("nofc", 1): {
        "loss": 33.24525068889335,
        "grad_f_s_row1": [-0.29619046410853556, -0.31814622517785796, -0.3824705609005812,
                          -0.409877890542511, -0.32570371249124364, -0.08292877350699746],
        "grad_f_s_abs": 3.833141448284505,
        "memory_v1_abs": 44.175333735247335,
        "z1": 913802333.2713158,
        "z2": 1223340584.6495676,
    },
}

GRADIENT_ELEMENT = {
    "loss": 7.652098308537161,
    "student_grad_abs": [2.6727961898059833, 0.5256210844765701, 19.306798125658663, 0.6429127820827975],
    "student_body_w_21": 0.052697122531690246,
}

STEP = {
    ("mse", 1): {
        "grad_pooled_abs": 7.552177636942553, "grad_logits_abs": 6.2392627029950996,
        "grad_logits_row0": [0.04044780818973495, 0.12587558582805522, 0.3041178015654175, 0.12180537573250234,
                             -0.049049208086197574, -0.16844498153626475, -0.3747523816932465],
        "distill": 26.830663961426623, "kd": 0.35464294021063836, "crcd": 24.069098936608622,
        "grad": 7.652098308537161, "mimic": 1.0,
        "student_grad_abs": [2.544559030637266, 0.5417453936629991, 5.3270128640382595, 5.513548489858988],
        "student_fc_w_00_53": [-0.3146197182004336, -0.06789126675604257],
        "embed_grad_abs": [19.821211470727892, 6.09317230750734, 72.84759595447369, 33.23749896614188],
    },
    ("mse", 2): {
        "grad_pooled_abs": 7.775657312584364, "grad_logits_abs": 8.974382796443878,
        "grad_logits_row0": [0.13440933441734615, 0.349810456908378, 0.15807042985002245, 0.26353345205200296,
                             -0.11969553274226409, -0.45036081469795713, -0.3357673257875291],
        "distill": 5.399769536707858, "kd": 0.4666835244432651, "crcd": 18.7660827510328,
        "grad": 12.85612972266988, "mimic": 0.0,
        "student_grad_abs": [5.3644811135081545, 2.4562478275702664, 13.36568073581344, 7.898592567575883],
        "student_fc_w_00_53": [0.22653795181210312, -0.2779897914512706],
        "embed_grad_abs": [0.0, 0.0, 0.0, 0.0],
    },
    ("crcd", 1): {
        "grad_pooled_abs": 7.2657741738882695, "grad_logits_abs": 16.727857634089695,
        "grad_logits_row0": [-0.13686080303519824, 0.712610153671949, 0.863716962171672, 0.22457678602950387,
                             -0.09342698643415152, -0.5909251907385531, -0.979690921665221],
        "distill": 32.08385509762925, "kd": 0.35464294021063836, "crcd": 24.069098936608622,
        "grad": 24.11056506035903, "mimic": 1.0,
        "student_grad_abs": [3.7413282069432148, 0.8009915401337273, 16.51333134611103, 15.750110553510225],
        "student_fc_w_00_53": [-1.1213484056345393, 0.029943346376185384],
        "embed_grad_abs": [19.821211470727892, 6.09317230750734, 72.84759595447369, 33.23749896614188],
        "grad_embed_grad_abs": [2.403765689874551, 2.664626786436717, 7.229379042904272, 9.618251289469471],
    },
    ("crcd", 2): {
        "grad_pooled_abs": 12.204047889981837, "grad_logits_abs": 15.188781569964608,
        "grad_logits_row0": [0.20198661367284987, 0.48142070590847597, 0.45330329622384374, 0.3950536935070514,
                             -0.18940365583506327, -0.7909863526427509, -0.5513743008344051],
        "distill": 9.132513126623563, "kd": 0.4666835244432651, "crcd": 18.7660827510328,
        "grad": 21.74329342237818, "mimic": 0.0,
        "student_grad_abs": [8.974591488557438, 4.3226519051566274, 22.310199380304116, 13.326182648857047],
        "student_fc_w_00_53": [0.4750320384243679, -0.2091809847991001],
        "embed_grad_abs": [0.0, 0.0, 0.0, 0.0],
        "grad_embed_grad_abs": [2.661899565601256, 8.892210796336101, 7.8490182690254535, 6.353685431716682],
    },
}
# (call, epoch) of the two STEP calls: the first iteration of epoch 1 and of epoch 241.
STEP_EPOCHS = {1: 1, 2: 241}
# make_crcd's 20 samples in batches of 64 are one iteration per epoch: epoch e starts at iteration e - 1.
STEP_ITERATIONS = {call: epoch - 1 for call, epoch in STEP_EPOCHS.items()}


def pat(n: int, a: float, c: float, fn=torch.sin) -> torch.Tensor:
    return fn(a * torch.arange(n, dtype=torch.float64) + c)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def inputs(call: int, s_dim: int = S_DIM, t_dim: int = T_DIM) -> tuple[torch.Tensor, ...]:
    """Features, dataset indices and contrast indices. Sample 0's negatives of call 1 include the
    other samples' indices (an anchor's own bank row among the contrast rows); call 2 has relaxed positives."""
    if call == 1:
        f_s = 2 * pat(B * s_dim, 0.37, 0.1).reshape(B, s_dim)
        f_t = 2 * pat(B * t_dim, 0.53, 0.2, torch.cos).reshape(B, t_dim)
        index = torch.tensor([3, 11, 0, 17])
        positive = index.clone()
    else:
        f_s = 2 * pat(B * s_dim, 0.41, 0.6).reshape(B, s_dim)
        f_t = 2 * pat(B * t_dim, 0.47, 0.8, torch.cos).reshape(B, t_dim)
        index = torch.tensor([5, 3, 19, 8])
        positive = torch.tensor([6, 11, 0, 8])
    j = torch.arange(K)
    negatives = (index[:, None] + 2 + 3 * j[None, :] + torch.arange(B)[:, None] * (call + 1)) % N
    return f_s, f_t, index, torch.cat([positive[:, None], negatives], 1)


def probe(dim: int, batch: int = 2) -> ModelOutput:
    return ModelOutput(torch.zeros(batch, 100), [torch.zeros(batch, 3, 4, 4), torch.zeros(batch, dim)])


def fill(relation: RelationContrast, shift: float = 0.0) -> None:
    """The parameters and banks the reference numbers were computed with (heads in parameter order)."""
    with torch.no_grad():
        for i, p in enumerate(relation.embed_s.parameters()):
            p.copy_(0.4 * pat(p.numel(), 0.71 + 0.1 * i, 0.3 * i).reshape(p.shape))
        for i, p in enumerate(relation.embed_t.parameters()):
            p.copy_(0.3 * pat(p.numel(), 0.61 + 0.1 * i, 0.5 + 0.2 * i, torch.cos).reshape(p.shape))
        dim = relation.student.bank.shape[1]
        relation.student.bank.copy_(unit_rows(pat(N * dim, 0.29, 0.7 + shift).reshape(N, dim)))
        relation.teacher.bank.copy_(unit_rows(pat(N * dim, 0.43, 0.9 + shift, torch.cos).reshape(N, dim)))


def make_crcd(embed_type: str = "linear", s_dim: int = S_DIM, t_dim: int = T_DIM, grad_type: str = "none") -> CRCD:
    crcd = CRCD(feat_dim=D, num_negatives=K, embed_type=embed_type, grad_type=grad_type)
    crcd.setup(probe(s_dim), probe(t_dim), torch.arange(N) % 4)
    crcd.double()
    fill(crcd.relation)
    if grad_type == "crcd":
        fill(crcd.grad_relation, shift=0.25)
    return crcd


def abs_sums(module: nn.Module) -> list[float]:
    return [p.grad.abs().sum().item() for p in module.parameters()]


@pytest.mark.parametrize(("embed_type", "calls", "dims"), [
    ("linear", (1, 2), (S_DIM, T_DIM)),
    ("nonlinear", (1,), (S_DIM, T_DIM)),
    ("nofc", (1,), (6, 6)),
])
def test_relation_loss_gradients_z_and_memory_equal_reference(embed_type, calls, dims):
    crcd = make_crcd(embed_type, *dims)
    relation = crcd.relation
    for call in calls:
        want = RELATION[(embed_type, call)]
        f_s, f_t, index, contrast_idx = inputs(call, *dims)
        f_s.requires_grad_()
        relation.zero_grad()
        loss = relation(f_s, f_t, index, contrast_idx)
        loss.backward()
        assert loss.item() == pytest.approx(want["loss"], rel=1e-9)
        assert f_s.grad[1].tolist() == pytest.approx(want["grad_f_s_row1"], rel=1e-7, abs=1e-12)
        assert f_s.grad.abs().sum().item() == pytest.approx(want["grad_f_s_abs"], rel=1e-9)
        if "grad_embed_s_abs" in want:
            assert abs_sums(relation.embed_s) == pytest.approx(want["grad_embed_s_abs"], rel=1e-9)
            assert abs_sums(relation.embed_t) == pytest.approx(want["grad_embed_t_abs"], rel=1e-9)
        if "grad_embed_s_w_00" in want:
            w_s, w_t = relation.embed_s.proj.weight.grad, relation.embed_t.proj.weight.grad
            assert w_s[0, 0].item() == pytest.approx(want["grad_embed_s_w_00"], rel=1e-7)
            assert w_t[-1, -1].item() == pytest.approx(want["grad_embed_t_w_last"], rel=1e-7)
        assert relation.teacher.z.item() == pytest.approx(want["z1"], rel=1e-12)
        assert relation.student.z.item() == pytest.approx(want["z2"], rel=1e-12)
        assert relation.student.bank.abs().sum().item() == pytest.approx(want["memory_v1_abs"], rel=1e-12)
        if "memory_v2_abs" in want:
            assert relation.teacher.bank.abs().sum().item() == pytest.approx(want["memory_v2_abs"], rel=1e-12)
            assert relation.student.bank[3].tolist() == pytest.approx(want["memory_v1_row3"], rel=1e-12)


class Tiny(nn.Module):
    """pooled = tanh(Linear(x)), logits = Linear(pooled); parameters from a fixed pattern."""

    def __init__(self, a: float, c: float, dim: int = 6):
        super().__init__()
        self.body = nn.Linear(5, dim).double()
        self.fc = nn.Linear(dim, CLASSES).double()
        with torch.no_grad():
            for i, p in enumerate(self.parameters()):
                p.copy_(0.8 * pat(p.numel(), a + 0.13 * i, c + 0.4 * i).reshape(p.shape))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        pooled = torch.tanh(self.body(x))
        return ModelOutput(self.fc(pooled), [pooled])


def step_batch(call: int) -> Batch:
    x = pat(B * 5, 0.23 + 0.05 * call, 0.3 * call).reshape(B, 5) * 2
    labels = torch.tensor([1, 4, 0, 6]) if call == 1 else torch.tensor([2, 2, 5, 3])
    return Batch(x, labels, inputs(call)[2])


def tiny_pair() -> tuple[Tiny, Tiny]:
    return Tiny(0.31, 0.2), Tiny(0.47, 1.1)


def test_gradient_element_equals_reference_get_grad_loss():
    student, teacher = tiny_pair()
    crcd = make_crcd(s_dim=6, t_dim=6, grad_type="mse")
    batch = step_batch(1)
    loss = crcd.gradient_loss(student(batch.images), teacher(batch.images), batch, inputs(1)[3])
    loss.backward()
    assert loss.item() == pytest.approx(GRADIENT_ELEMENT["loss"], rel=1e-9)
    assert abs_sums(student) == pytest.approx(GRADIENT_ELEMENT["student_grad_abs"], rel=1e-9)
    assert student.body.weight.grad[2, 1].item() == pytest.approx(GRADIENT_ELEMENT["student_body_w_21"], rel=1e-7)
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("grad_type", ["mse", "crcd"])
def test_step_terms_and_gradients_equal_reference_total_minus_ce(grad_type):
    student, teacher = tiny_pair()
    crcd = make_crcd(s_dim=6, t_dim=6, grad_type=grad_type)
    for call in (1, 2):
        want = STEP[(grad_type, call)]
        batch = step_batch(call)
        student.zero_grad()
        crcd.zero_grad()
        student_out = student(batch.images)
        student_out.logits.retain_grad()
        student_out.pooled.retain_grad()
        terms = crcd.loss_terms(student_out, teacher(batch.images), batch, inputs(call)[3], STEP_ITERATIONS[call])
        assert list(terms) == ["kd", "crcd", "grad"]
        assert terms["kd"].item() == pytest.approx(0.9 * want["kd"] * want["mimic"], rel=1e-9)
        assert terms["crcd"].item() == pytest.approx(want["crcd"] * want["mimic"], rel=1e-9)
        assert terms["grad"].item() == pytest.approx(0.9 * want["kd"] * want["grad"], rel=1e-9)
        total = sum(terms.values())
        assert total.item() == pytest.approx(want["distill"], rel=1e-9)
        total.backward()
        assert student_out.pooled.grad.abs().sum().item() == pytest.approx(want["grad_pooled_abs"], rel=1e-9)
        assert student_out.logits.grad.abs().sum().item() == pytest.approx(want["grad_logits_abs"], rel=1e-9)
        assert student_out.logits.grad[0].tolist() == pytest.approx(want["grad_logits_row0"], rel=1e-7)
        assert abs_sums(student) == pytest.approx(want["student_grad_abs"], rel=1e-9)
        fc = student.fc.weight.grad
        assert [fc[0, 0].item(), fc[5, 3].item()] == pytest.approx(want["student_fc_w_00_53"], rel=1e-7)
        heads = nn.ModuleList([crcd.relation.embed_s, crcd.relation.embed_t])
        assert abs_sums(heads) == pytest.approx(want["embed_grad_abs"], rel=1e-9, abs=1e-300)
        if grad_type == "crcd":
            grad_heads = nn.ModuleList([crcd.grad_relation.embed_s, crcd.grad_relation.embed_t])
            assert abs_sums(grad_heads) == pytest.approx(want["grad_embed_grad_abs"], rel=1e-9)


def test_own_anchor_relation_is_the_constant_direction_and_rows_are_divided_by_b_squared():
    crcd = make_crcd()
    relation = crcd.relation
    f_s, _, index, contrast_idx = inputs(1)
    v_s = relation.embed_s(f_s)
    probs = relation.probabilities(v_s, relation.teacher, index, contrast_idx)
    assert probs.shape == (B * B, K + 1)
    anchors = relation.teacher.bank[index]
    for b in range(B):
        r_s = v_s[b] - anchors[b] + 1e-6
        r_s = r_s / r_s.norm()
        # Positive of sample b against its own anchor: (row - row) + 1e-6 is the all-ones direction.
        want = torch.exp(r_s.sum() / math.sqrt(D) / 0.05) / relation.teacher.z
        assert probs[b * B + b, 0].item() == pytest.approx(want.item(), rel=1e-12)


def test_memory_starts_row_normalised_and_z_unset():
    crcd = CRCD(num_negatives=32)
    crcd.setup(probe(64), probe(64), torch.arange(300) % 10)
    for bank in (crcd.relation.student, crcd.relation.teacher):
        assert bank.bank.shape == (300, 128)
        assert torch.allclose(bank.bank.norm(dim=1), torch.ones(300))
        assert bank.z.item() < 0
    assert crcd.extra_parameter_count() == 2 * (64 * 128 + 128)
    assert "grad_relation" not in crcd._modules


def test_schedule_switches_kd_and_crcd_off_after_epoch_240_but_not_the_gradient_term():
    student, teacher = tiny_pair()
    for schedule_grad_term in (False, True):
        crcd = make_crcd(s_dim=6, t_dim=6, grad_type="mse")
        crcd.schedule_grad_term = schedule_grad_term
        batch = step_batch(1)
        for epoch, on in ((240, True), (241, False), (250, False)):
            terms = crcd.loss_terms(student(batch.images), teacher(batch.images), batch, inputs(1)[3], epoch - 1)
            assert (terms["kd"].item() > 0) == on and (terms["crcd"].item() > 0) == on
            assert (terms["grad"].item() > 0) == (on or not schedule_grad_term)


def test_teacher_mode_knobs():
    assert CRCD.teacher_train_mode and CRCD.teacher_grad
    default = CRCD()
    assert default.teacher_train_mode and default.teacher_grad
    frozen_bn = CRCD(teacher_mode="eval")
    assert not frozen_bn.teacher_train_mode and frozen_bn.teacher_grad
    assert not CRCD(grad_type="none").teacher_grad


@pytest.mark.parametrize("knob", [{"embed_type": "mlp"}, {"grad_type": "l2"}, {"mode": "queue"},
                                  {"teacher_mode": "frozen"}])
def test_unknown_choices_are_config_errors(knob):
    with pytest.raises(ConfigError, match=next(iter(knob))):
        CRCD(**knob)


def test_mse_gradient_and_nofc_need_equal_pooled_dims_at_setup():
    labels = torch.arange(100) % 10
    with pytest.raises(ConfigError, match="grad_type"):
        CRCD(num_negatives=8).setup(probe(1280), probe(512), labels)
    with pytest.raises(ConfigError, match="nofc"):
        CRCD(num_negatives=8, embed_type="nofc", grad_type="crcd").setup(probe(1280), probe(512), labels)
    cross = CRCD(num_negatives=8, grad_type="crcd")
    cross.setup(probe(1280), probe(512), labels)
    assert cross.grad_relation.embed_s.proj.in_features == 1280


def test_default_k_exceeds_a_small_training_set_and_names_the_config_field():
    with pytest.raises(ConfigError, match="num_negatives"):
        CRCD().setup(probe(8), probe(8), torch.arange(256) % 100)


def test_forward_before_setup_is_a_clear_error():
    student, teacher = tiny_pair()
    batch = step_batch(1)
    with pytest.raises(RuntimeError, match="setup"):
        CRCD()(student(batch.images), teacher(batch.images), batch, epoch=1)


def test_gradient_element_needs_the_teacher_graph():
    student, teacher = tiny_pair()
    crcd = make_crcd(s_dim=6, t_dim=6, grad_type="mse")
    batch = step_batch(1)
    with torch.no_grad():
        teacher_out = teacher(batch.images)
    with pytest.raises(RuntimeError, match="teacher_grad"):
        crcd.loss_terms(student(batch.images), teacher_out, batch, inputs(1)[3], 0)


def test_forward_draws_class_aware_negatives_and_gives_float32_terms_from_bf16_features():
    torch.manual_seed(0)
    student, teacher = Tiny(0.31, 0.2, dim=16).float(), Tiny(0.47, 1.1, dim=16).float()
    labels = torch.arange(200) % CLASSES
    crcd = CRCD(feat_dim=8, num_negatives=16)
    crcd.setup(probe(16), probe(16), labels)
    x = pat(8 * 5, 0.3, 0.1).reshape(8, 5).float()
    index = torch.arange(0, 80, 10)
    batch = Batch(x, labels[index], index)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = crcd(student(x), teacher(x), batch, epoch=1)
    assert list(terms) == ["kd", "crcd", "grad"]
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for t in terms.values())
    sum(terms.values()).backward()
    assert student.body.weight.grad.abs().sum() > 0
    assert crcd.relation.embed_t.proj.weight.grad.abs().sum() > 0
    assert crcd.relation.student.z.item() > 0 and crcd.relation.teacher.z.item() > 0
    assert {"relation.student.bank", "relation.teacher.z", "sampler.seed"} <= set(crcd.state_dict())


def test_crcd_config_carries_the_repository_recipe(tmp_path):
    cfg = compose_config(["experiment=crcd_resnet32x4_8x4"], run_dir=tmp_path)
    assert cfg.trainer.epochs == 250
    assert list(cfg.sched.milestones) == [150, 180, 210] and cfg.optim.lr == 0.05
    assert cfg.dataset.batch_size == 64
    assert cfg.distiller.ce_weight == 1.0
    method = cfg.distiller.method
    assert method._target_ == "distillbench.distillers.crcd.CRCD"
    assert (method.kd_weight, method.kd_temperature, method.crcd_weight) == (0.9, 4.0, 1.0)
    assert (method.feat_dim, method.embed_type, method.num_negatives) == (128, "linear", 500)
    assert (method.temperature, method.momentum, method.mode) == (0.05, 0.5, "exact")
    assert (method.grad_type, method.grad_weight) == ("mse", 1.0)
    assert (method.distill_fraction, method.schedule_grad_term, method.teacher_mode) == (0.96, False, "train")
    assert (method.epochs, method.batch_size, method.drop_last) == (250, 64, False)
    assert cfg.published is None
