"""RRD against the authors' code (giakoumoglou/rrd, whose history giakoumoglou/distillers shares).

The pinned numbers were computed once by running the reference losses in float64 on the inputs,
head parameters and queue / memory contents built below (same values copied into both), over
two successive calls; only the numbers are kept here.

* 2024 FIFO (``REFERENCE_2024``): ``distillers/RRD.py::RRDLoss`` at 5a19fd0 (the commit that wrote
  the published README table; the file is unchanged since ee559b3, 2024-07-14): scores against
  the queue, then enqueues; tau_s 0.04, tau_t 0.10 (``train_student.py`` defaults of that time).
  The 2024-09 revision 72aa7d7 (Linear + ``F.normalize`` heads, enqueue under no_grad) gives the
  same numbers to 1e-15.
* 2025 FIFO (``REFERENCE_2025``): ``cifar/distillers/RRD.py::RRD_FifoMemory_Loss`` at rrd
  83cefda (unchanged since 1c0e48d, 2025-02-11): enqueues, then scores; tau_s 0.1, tau_t 0.02.
* Momentum (``REFERENCE_MOMENTUM``): ``RRD_MomentumMemory_Loss`` with its ``ContrastMemory`` at
  83cefda, tau 0.07 (its ``params`` buffer held in float64 so that tau is exactly 0.07), momentum
  0.5, tau_s 0.1, tau_t 0.02; the first call sets Z, the second has positives that differ from the
  dataset index (relax mode). The reference's ``memory_v1`` / ``memory_v2`` / ``Z_v1`` / ``Z_v2``
  are ``memory.student.bank`` / ``memory.teacher.bank`` / ``memory.teacher.z`` / ``memory.student.z``.

In every case the reference leaves ``embed_t.weight.grad`` at None.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from distillbench.distillers.base import Batch
from distillbench.distillers.combined import Combined
from distillbench.distillers.rrd import RRD, RRDMomentum, relational_loss
from distillbench.errors import ConfigError
from distillbench.models import ModelOutput
from tests.helpers import compose_config

B, D, S_DIM, T_DIM, K = 4, 8, 6, 10, 8
N, NEGATIVES = 20, 6

REFERENCE_2024 = {
    1: {
        "loss": 2.8205559829978615,
        "grad_f_s_row1": [0.005106405333328694, -0.006271139567722028, -0.014617991667680668,
                          -0.01590031560090987, -0.009498394668213624, 0.0014938748019404247],
        "grad_f_s_abs": 0.49170862441327856,
        "grad_embed_s_w_abs": 37.65626721402765,
        "grad_embed_s_w_00_35": [0.019439991456837634, -0.5373463960912277],
        "grad_embed_s_b_abs": 2.5234458984901487,
    },
    2: {
        "loss": 4.995797914012534,
        "grad_f_s_row1": [-0.05414792235751836, -0.10966831876168426, -0.11218862154815584,
                          -0.06049082824241128, 0.020440745575884933, 0.09149379256555684],
        "grad_f_s_abs": 2.767412072315508,
        "grad_embed_s_w_abs": 65.14664241621952,
        "grad_embed_s_w_00_35": [0.19471208522784078, 1.8140471859528708],
        "grad_embed_s_b_abs": 5.111752544967357,
    },
}
REFERENCE_2025 = {
    1: {
        "loss": 2.8224487299395498,
        "grad_f_s_row1": [0.0024695089868983083, -0.01582035012160555, -0.02646460978099372,
                          -0.024319152120136266, -0.010420825867656913, 0.008513638011402841],
        "grad_f_s_abs": 0.30189606541711334,
        "grad_embed_s_w_abs": 15.833429647875283,
        "grad_embed_s_w_00_35": [-0.17117913522215392, 0.08738882620475738],
        "grad_embed_s_b_abs": 1.5705110588249473,
    },
    2: {
        "loss": 2.5339108350251522,
        "grad_f_s_row1": [-0.005310619777255027, -0.016608157477242383, -0.01987936714512052,
                          -0.013543350846112412, -0.0006621547645909165, 0.012539044987169928],
        "grad_f_s_abs": 0.5941052666346964,
        "grad_embed_s_w_abs": 32.30988575568402,
        "grad_embed_s_w_00_35": [-0.5366939905892929, 1.0106255891500375],
        "grad_embed_s_b_abs": 0.8650562607267668,
    },
}
# The queue after each call; the same in both versions (the same keys go to the same slots).
QUEUE_AFTER = {
    1: {
        "abs": 16.75785332187941,
        "ptr": 4,
        "row0": [0.28662871035711446, 0.33839042486771315, 0.3691853399627131, 0.37953480521622934,
                 0.3767677152289473, 0.3689668084239569, 0.35865141248692134, 0.3409841147424539],
        "row_last": [0.1288366621023015, -0.11297634994374851, -0.281326662179032, -0.2667447399890238,
                     -0.07871245611117862, 0.16050248269880776, 0.295350926120546, 0.23814787880790345],
    },
    2: {
        "abs": 20.85979396326458,
        "ptr": 0,
        "row0": [0.28662871035711446, 0.33839042486771315, 0.3691853399627131, 0.37953480521622934,
                 0.3767677152289473, 0.3689668084239569, 0.35865141248692134, 0.3409841147424539],
        "row_last": [0.21626818411282933, 0.1014950688262387, -0.03239414468400971, -0.17838938414876687,
                     -0.3190935161815139, -0.4367730961924155, -0.5238088791314744, -0.5857367318805856],
    },
}
REFERENCE_MOMENTUM = {
    1: {
        "loss": 1.953052147842572,
        "grad_f_s_row1": [0.0005086295643985349, 0.001643276704733701, 0.0019837672447481293,
                          0.0013655501937777093, 8.739516867681957e-05, -0.0012329958656372361],
        "grad_f_s_abs": 0.10961167545360023,
        "grad_embed_s_w_abs": 13.945616364385849,
        "grad_embed_s_w_00_35": [0.25757159857278844, -0.09315489867008428],
        "grad_embed_s_b_abs": 1.2450218874952312,
        "memory_v1_abs": 50.500873414202005,
        "memory_v2_abs": 50.82813059561249,
        "memory_v1_row3": [0.5196346014692486, 0.5580650085965313, -0.03760206131623404, 0.3455542035160949,
                           0.45315042733509553, -0.2055967531415173, 0.04621142392137574, 0.21902254257500872],
        "memory_v2_row5": [0.3659957489044721, 0.4746875083573693, 0.49695362488624684, 0.42874014003938893,
                           0.28246658072699, 0.08476475457782923, -0.1283700633453001, -0.3181327363067757],
    },
    2: {
        "loss": 2.0718825296982963,
        "grad_f_s_row1": [-0.005187561428823038, -0.00878208885953176, -0.008132441336436735,
                          -0.003552578077033996, 0.002744161786232141, 0.007714713437490975],
        "grad_f_s_abs": 0.10715061439906892,
        "grad_embed_s_w_abs": 9.208517836823368,
        "grad_embed_s_w_00_35": [0.30695046458738795, -0.08034706883898159],
        "grad_embed_s_b_abs": 1.0963324754081483,
        "memory_v1_abs": 48.7922931313843,
        "memory_v2_abs": 50.15697999181994,
        "memory_v1_row3": [0.47979698379452446, 0.2889281003591191, 0.5786072820138217, 0.3235240518706217,
                           0.03061189558726701, 0.34148149156478064, 0.13582592995832274, -0.3329652050057852],
        "memory_v2_row5": [0.3971483476556489, 0.47363638113981066, 0.48971419937296234, 0.44405719390869924,
                           0.34868766149033054, 0.22379262653250298, 0.09096705924876712, -0.03152378548527433],
    },
}
Z_V1, Z_V2 = 22.394575917664557, 14685013.066069253


def pat(n: int, a: float, c: float, fn=torch.sin) -> torch.Tensor:
    return fn(a * torch.arange(n, dtype=torch.float64) + c)


def features(call: int) -> tuple[torch.Tensor, torch.Tensor]:
    if call == 1:
        f_s = 2 * pat(B * S_DIM, 0.37, 0.1).reshape(B, S_DIM)
        f_t = 2 * pat(B * T_DIM, 0.53, 0.2, torch.cos).reshape(B, T_DIM)
    else:
        f_s = 2 * pat(B * S_DIM, 0.41, 0.6).reshape(B, S_DIM)
        f_t = 2 * pat(B * T_DIM, 0.47, 0.8, torch.cos).reshape(B, T_DIM)
    return f_s.requires_grad_(), f_t


def contrast_indices(call: int) -> tuple[torch.Tensor, torch.Tensor]:
    if call == 1:
        index = torch.tensor([3, 11, 0, 17])
        positive = index.clone()
    else:
        index = torch.tensor([5, 3, 19, 8])
        positive = torch.tensor([6, 11, 0, 8])
    j = torch.arange(NEGATIVES)
    negatives = (index[:, None] + 2 + 3 * j[None, :] + torch.arange(B)[:, None] * (call + 1)) % N
    return index, torch.cat([positive[:, None], negatives], 1)


def probe(dim: int, batch: int = 2) -> ModelOutput:
    return ModelOutput(torch.zeros(batch, 100), [torch.zeros(batch, 3, 4, 4), torch.zeros(batch, dim)])


def set_heads(method: RRD | RRDMomentum) -> None:
    with torch.no_grad():
        method.embed_s.weight.copy_(0.4 * pat(D * S_DIM, 0.71, 0.3).reshape(D, S_DIM))
        method.embed_s.bias.copy_(0.1 * pat(D, 1.1, 0.0, torch.cos))
        method.embed_t.weight.copy_(0.3 * pat(D * T_DIM, 0.61, 0.5, torch.cos).reshape(D, T_DIM))
        method.embed_t.bias.copy_(0.1 * pat(D, 0.9, 0.4))


def fifo(**knobs) -> RRD:
    rrd = RRD(feat_dim=D, queue_size=K, **knobs)
    rrd.setup(probe(S_DIM), probe(T_DIM), torch.arange(N) % 4)
    rrd.double()
    set_heads(rrd)
    with torch.no_grad():
        rrd.queue.copy_(0.3 * pat(K * D, 0.83, 0.2).reshape(K, D))
    return rrd


def assert_gradients(method: RRD | RRDMomentum, loss: torch.Tensor, f_s: torch.Tensor, want: dict) -> None:
    w_s, b_s = method.embed_s.weight.grad, method.embed_s.bias.grad
    assert loss.item() == pytest.approx(want["loss"], rel=1e-9)
    assert f_s.grad[1].tolist() == pytest.approx(want["grad_f_s_row1"], rel=1e-7, abs=1e-12)
    assert f_s.grad.abs().sum().item() == pytest.approx(want["grad_f_s_abs"], rel=1e-9)
    assert w_s.abs().sum().item() == pytest.approx(want["grad_embed_s_w_abs"], rel=1e-9)
    assert [w_s[0, 0].item(), w_s[3, 5].item()] == pytest.approx(want["grad_embed_s_w_00_35"], rel=1e-7)
    assert b_s.abs().sum().item() == pytest.approx(want["grad_embed_s_b_abs"], rel=1e-9)
    # The teacher side is detached in the reference: embed_t gets no gradient at all (§9 item 27).
    assert method.embed_t.weight.grad is None and method.embed_t.bias.grad is None


@pytest.mark.parametrize(
    ("knobs", "reference"),
    [
        ({}, REFERENCE_2024),  # the defaults are the 2024 code's
        ({"student_temperature": 0.1, "teacher_temperature": 0.02, "enqueue": "before_scoring"}, REFERENCE_2025),
    ],
    ids=["2024", "2025"],
)
def test_fifo_loss_gradients_and_queue_equal_reference_over_two_steps(knobs, reference):
    rrd = fifo(**knobs)
    for call in (1, 2):
        f_s, f_t = features(call)
        rrd.zero_grad()
        loss = rrd.queue_loss(f_s, f_t)
        loss.backward()
        assert_gradients(rrd, loss, f_s, reference[call])
        queue = QUEUE_AFTER[call]
        assert rrd.queue.abs().sum().item() == pytest.approx(queue["abs"], rel=1e-12)
        assert rrd.queue[0].tolist() == pytest.approx(queue["row0"], rel=1e-12)
        assert rrd.queue[-1].tolist() == pytest.approx(queue["row_last"], rel=1e-12)
        assert int(rrd.queue_ptr) == queue["ptr"]


def test_momentum_loss_gradients_z_and_memory_equal_reference_over_two_calls():
    rrd = RRDMomentum(feat_dim=D, num_negatives=NEGATIVES)
    rrd.setup(probe(S_DIM), probe(T_DIM), torch.arange(N) % 4)
    rrd.double()
    set_heads(rrd)
    with torch.no_grad():
        rrd.memory.student.bank.copy_(0.5 * pat(N * D, 0.29, 0.7).reshape(N, D))
        rrd.memory.teacher.bank.copy_(0.5 * pat(N * D, 0.43, 0.9, torch.cos).reshape(N, D))
    for call in (1, 2):
        want = REFERENCE_MOMENTUM[call]
        f_s, f_t = features(call)
        index, contrast_idx = contrast_indices(call)
        rrd.zero_grad()
        loss = rrd.memory_loss(f_s, f_t, index, contrast_idx)
        loss.backward()
        assert_gradients(rrd, loss, f_s, want)
        assert rrd.memory.teacher.z.item() == pytest.approx(Z_V1, rel=1e-12)
        assert rrd.memory.student.z.item() == pytest.approx(Z_V2, rel=1e-12)
        assert rrd.memory.student.bank.abs().sum().item() == pytest.approx(want["memory_v1_abs"], rel=1e-12)
        assert rrd.memory.teacher.bank.abs().sum().item() == pytest.approx(want["memory_v2_abs"], rel=1e-12)
        assert rrd.memory.student.bank[3].tolist() == pytest.approx(want["memory_v1_row3"], rel=1e-12)
        assert rrd.memory.teacher.bank[5].tolist() == pytest.approx(want["memory_v2_row5"], rel=1e-12)


def test_relational_loss_is_a_soft_cross_entropy_with_a_detached_teacher():
    s = torch.tensor([[0.2, -0.1, 0.4], [0.0, 0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.5, 0.1, -0.3], [0.2, 0.2, 0.1]], dtype=torch.float64, requires_grad=True)
    p_t = torch.softmax(t / 0.1, 1)
    want = -(p_t * torch.log_softmax(s / 0.04, 1)).sum(1).mean()
    loss = relational_loss(s, t, 0.04, 0.1)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    loss.backward()
    assert t.grad is None and s.grad is not None


def test_embed_t_stays_at_its_initialisation_under_sgd_with_weight_decay():
    rrd = fifo()
    embed_t, embed_s = rrd.embed_t.weight.detach().clone(), rrd.embed_s.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in rrd.parameters() if p.requires_grad], lr=0.1, momentum=0.9,
                                weight_decay=5e-4)
    for call in (1, 2):
        f_s, f_t = features(call)
        optimizer.zero_grad(set_to_none=True)
        rrd.queue_loss(f_s, f_t).backward()
        optimizer.step()
    assert torch.equal(rrd.embed_t.weight, embed_t)
    assert not torch.equal(rrd.embed_s.weight, embed_s)


def test_queue_is_column_normalised_and_checkpointed():
    torch.manual_seed(0)
    rrd = RRD(queue_size=64, feat_dim=16)
    rrd.setup(probe(12), probe(20), torch.arange(100) % 10)
    assert rrd.queue.shape == (64, 16) and int(rrd.queue_ptr) == 0
    # randn normalised along dim 0, as the reference: unit columns, rows of norm ~ sqrt(d / K).
    assert torch.linalg.vector_norm(rrd.queue, dim=0).tolist() == pytest.approx([1.0] * 16, rel=1e-6)
    rrd.queue_loss(torch.ones(8, 12), torch.ones(8, 20))
    state = rrd.state_dict()
    assert {"queue", "queue_ptr"} <= state.keys() and int(state["queue_ptr"]) == 8
    restored = RRD(queue_size=64, feat_dim=16)
    restored.setup(probe(12), probe(20), torch.arange(100) % 10)
    restored.load_state_dict(state)
    assert torch.equal(restored.queue, rrd.queue) and int(restored.queue_ptr) == 8


@pytest.mark.parametrize("enqueue", ["after_scoring", "before_scoring"])
def test_a_partial_batch_wraps_around_the_end_of_the_queue(enqueue):
    rrd = fifo(enqueue=enqueue)
    keys = []
    for size in (4, 3, 4):  # the 3-batch leaves the pointer at 7; the next batch fills slots 7, 0, 1, 2
        f_s, f_t = features(1)
        f_s, f_t = f_s[:size], f_t[:size] * size
        rrd.queue_loss(f_s, f_t)
        keys.append(torch.nn.functional.normalize(rrd.embed_t(f_t), dim=1).detach())
    assert int(rrd.queue_ptr) == 3
    newest = torch.cat(keys)[-K:]  # the last K keys, oldest first, start at the pointer
    assert torch.allclose(rrd.queue.roll(-3, dims=0), newest, rtol=1e-12, atol=0)


def test_each_order_scores_against_the_queue_it_names():
    f_s, f_t = features(1)
    losses = {}
    for enqueue in ("after_scoring", "before_scoring"):
        rrd = fifo(enqueue=enqueue)
        losses[enqueue] = rrd.queue_loss(f_s, f_t).item()
    # Enqueue-then-score equals score-after-enqueue on a queue that already holds the batch's keys.
    rrd = fifo()
    rrd.queue_loss(f_s, f_t)
    rrd.queue_ptr.zero_()
    assert rrd.queue_loss(f_s, f_t).item() == pytest.approx(
        fifo(enqueue="before_scoring", student_temperature=0.04, teacher_temperature=0.10).queue_loss(f_s, f_t).item(),
        rel=1e-12,
    )
    assert losses["after_scoring"] != pytest.approx(losses["before_scoring"], rel=1e-3)


def test_a_batch_larger_than_the_queue_names_the_config_field():
    rrd = RRD(queue_size=4, feat_dim=D)
    rrd.setup(probe(S_DIM), probe(T_DIM), torch.arange(N) % 4)
    with pytest.raises(ConfigError, match="queue_size"):
        rrd.queue_loss(torch.ones(5, S_DIM), torch.ones(5, T_DIM))


@pytest.mark.parametrize(
    "knobs",
    [{"enqueue": "sometimes"}, {"queue_size": 0}, {"student_temperature": 0.0}, {"feat_dim": 0}],
)
def test_bad_knobs_are_config_errors(knobs):
    with pytest.raises(ConfigError):
        RRD(**knobs)


def test_momentum_rejects_unknown_mode_and_too_many_negatives():
    with pytest.raises(ConfigError, match="mode"):
        RRDMomentum(mode="queue")
    with pytest.raises(ConfigError, match="num_negatives"):
        RRDMomentum(num_negatives=256).setup(probe(8), probe(8), torch.arange(256) % 100)


def test_forward_runs_before_setup_only_with_a_clear_error():
    batch = Batch(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), torch.tensor([0, 1]))
    for method in (RRD(), RRDMomentum()):
        with pytest.raises(RuntimeError, match="setup"):
            method(probe(8), probe(8), batch, 1)


def test_forward_returns_the_weighted_term_in_float32_under_autocast():
    torch.manual_seed(0)
    rrd = RRD(weight=2.0, queue_size=16, feat_dim=D)
    rrd.setup(probe(S_DIM), probe(T_DIM), torch.arange(N) % 4)
    f_s, f_t = features(1)
    student = ModelOutput(torch.zeros(B, 100), [f_s.detach().bfloat16()])
    teacher = ModelOutput(torch.zeros(B, 100), [f_t.bfloat16()])
    batch = Batch(torch.zeros(B, 3, 4, 4), torch.arange(B), torch.arange(B))
    queue, ptr = rrd.queue.clone(), rrd.queue_ptr.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = rrd(student, teacher, batch, 1)
    assert set(terms) == {"rrd"} and terms["rrd"].dtype == torch.float32 and rrd.queue.dtype == torch.float32
    assert int(rrd.queue_ptr) == B
    rrd.queue.copy_(queue)
    rrd.queue_ptr.copy_(ptr)
    assert terms["rrd"].item() == pytest.approx(2.0 * rrd.queue_loss(student.pooled, teacher.pooled).item(), rel=1e-6)


def test_momentum_forward_draws_class_aware_negatives():
    torch.manual_seed(0)
    rrd = RRDMomentum(num_negatives=NEGATIVES, feat_dim=D)
    rrd.setup(probe(S_DIM), probe(T_DIM), torch.arange(N) % 4)
    batch = Batch(torch.zeros(B, 3, 4, 4), torch.tensor([3, 11, 0, 17]) % 4, torch.tensor([3, 11, 0, 17]))
    f_s, f_t = features(1)
    terms = rrd(ModelOutput(torch.zeros(B, 100), [f_s.float()]), ModelOutput(torch.zeros(B, 100), [f_t.float()]),
                batch, 1)
    terms["rrd"].backward()
    assert torch.isfinite(terms["rrd"]) and rrd.embed_t.weight.grad is None
    assert rrd.embed_s.weight.grad is not None


def test_heads_are_sized_from_the_probes():
    rrd = RRD()
    rrd.setup(probe(256), probe(256), torch.arange(100) % 100)
    assert rrd.extra_parameter_count() == 65_792  # methods.md §7, resnet32x4 -> resnet8x4 (both heads)
    assert rrd.queue.shape == (16384, 128)
    cross = RRD()
    cross.setup(probe(1280), probe(512), torch.arange(100) % 10)
    assert cross.extra_parameter_count() == 229_632  # vgg13 -> MobileNetV2


def test_configs_carry_the_versions_and_the_published_numbers(tmp_path):
    rrd = compose_config(["experiment=rrd_resnet32x4_8x4"], run_dir=tmp_path)
    assert rrd.distiller.ce_weight == 1.0
    method = rrd.distiller.method
    assert method._target_ == "distillbench.distillers.rrd.RRD" and method.weight == 1.0
    assert (method.student_temperature, method.teacher_temperature, method.enqueue) == (0.04, 0.10, "after_scoring")
    assert method.queue_size == 16384 and method.feat_dim == 128
    assert rrd.published.acc1 == 74.48 and rrd.published.paper == "rrd"

    both = compose_config(["experiment=rrd_kd_resnet32x4_8x4"], run_dir=tmp_path)
    assert both.distiller.ce_weight == 1.0
    assert both.distiller.method._target_ == "distillbench.distillers.combined.Combined"
    assert both.distiller.method.kd.weight == 1.0 and both.distiller.method.kd.temperature == 4.0
    assert both.distiller.method.rrd.weight == 1.0 and both.distiller.method.rrd.enqueue == "after_scoring"
    assert both.published.acc1 == 75.08

    late = compose_config(["distiller=rrd_2025"], run_dir=tmp_path).distiller.method
    assert (late.student_temperature, late.teacher_temperature, late.enqueue) == (0.1, 0.02, "before_scoring")


def test_rrd_kd_combines_both_terms():
    method = instantiate(compose_config(["distiller=rrd_kd"]).distiller.method)
    assert isinstance(method, Combined) and set(method.parts) == {"kd", "rrd"}
