"""CRD against RepDistiller's ``crd/criterion.py::CRDLoss`` (commit b84f547).

The pinned numbers were computed once by running ``CRDLoss`` (with its ``Embed``,
``crd/memory.py::ContrastMemory`` and ``ContrastLoss``) in float64 on the inputs, head
parameters, memory contents and contrast indices built below, with its ``params`` buffer held
in float64 so that tau is exactly 0.07; only the numbers are kept here. Two successive calls:
the first sets Z, the second runs with Z frozen and the banks as the first call's momentum
update left them, and with positives that differ from the dataset index (relax mode).
RepDistiller's ``Z_v1``/``memory_v1`` correspond to ``memory.teacher.z``/``memory.student.bank``.
"""

from __future__ import annotations

import pytest
import torch

from distillbench.distillers.base import Batch
from distillbench.distillers.crd import CRD, nce_loss
from distillbench.models import ModelOutput
from tests.helpers import compose_config

B, N, K, D, S_DIM, T_DIM = 4, 20, 6, 8, 6, 10

REFERENCE = {
    1: {
        "loss": 15.96874501037625,
        "grad_f_s_row1": [0.003876127806233934, -0.00925716871159548, -0.017916695467205826,
                          -0.01791750886052672, -0.009259215797884773, 0.0038738363351567585],
        "grad_f_s_abs": 0.26526693835831827,
        "grad_embed_s_w_abs": 46.905200369390045,
        "grad_embed_s_w_00_35": [0.9884081774736586, -1.225249812132223],
        "grad_embed_s_b_abs": 1.5167802029571813,
        "grad_embed_t_w_abs": 34.56178036301536,
        "grad_embed_t_w_00_79": [-0.4192130724927472, 0.3937741741282881],
        "grad_embed_t_b_abs": 2.9275135112980655,
        "memory_v1_abs": 50.500873414202005,
        "memory_v2_abs": 50.82813059561249,
        "memory_v1_row3": [0.5196346014692486, 0.5580650085965313, -0.03760206131623404, 0.3455542035160949,
                           0.45315042733509553, -0.2055967531415173, 0.04621142392137574, 0.21902254257500872],
    },
    2: {
        "loss": 24.4113465586314,
        "grad_f_s_row1": [-0.05911585553959295, -0.1138449246067201, -0.1135554456539078,
                          -0.05838731698335166, 0.024998015170814375, 0.09630240034530678],
        "grad_f_s_abs": 0.8354379510824654,
        "grad_embed_s_w_abs": 41.52327501236304,
        "grad_embed_s_w_00_35": [1.1303617648367608, 0.33015785867234215],
        "grad_embed_s_b_abs": 4.054048425894075,
        "grad_embed_t_w_abs": 29.565324427040238,
        "grad_embed_t_w_00_79": [-0.786626319759864, -0.22557837322248256],
        "grad_embed_t_b_abs": 4.027649426294291,
        "memory_v1_abs": 48.7922931313843,
        "memory_v2_abs": 50.15697999181994,
        "memory_v1_row3": [0.47979698379452446, 0.2889281003591191, 0.5786072820138217, 0.3235240518706217,
                           0.03061189558726701, 0.34148149156478064, 0.13582592995832274, -0.3329652050057852],
    },
}
Z_V1, Z_V2 = 22.394575917664557, 14685013.066069253


def pat(n: int, a: float, c: float, fn=torch.sin) -> torch.Tensor:
    return fn(a * torch.arange(n, dtype=torch.float64) + c)


def inputs(call: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if call == 1:
        f_s = 2 * pat(B * S_DIM, 0.37, 0.1).reshape(B, S_DIM)
        f_t = 2 * pat(B * T_DIM, 0.53, 0.2, torch.cos).reshape(B, T_DIM)
        index = torch.tensor([3, 11, 0, 17])
        positive = index.clone()
    else:
        f_s = 2 * pat(B * S_DIM, 0.41, 0.6).reshape(B, S_DIM)
        f_t = 2 * pat(B * T_DIM, 0.47, 0.8, torch.cos).reshape(B, T_DIM)
        index = torch.tensor([5, 3, 19, 8])
        positive = torch.tensor([6, 11, 0, 8])
    j = torch.arange(K)
    negatives = (index[:, None] + 2 + 3 * j[None, :] + torch.arange(B)[:, None] * (call + 1)) % N
    return f_s, f_t, index, torch.cat([positive[:, None], negatives], 1)


def probe(dim: int, batch: int = 2) -> ModelOutput:
    return ModelOutput(torch.zeros(batch, 100), [torch.zeros(batch, 3, 4, 4), torch.zeros(batch, dim)])


def reference_crd() -> CRD:
    crd = CRD(weight=0.8, feat_dim=D, num_negatives=K)
    crd.setup(probe(S_DIM), probe(T_DIM), torch.arange(N) % 4)
    crd.double()
    with torch.no_grad():
        crd.embed_s.linear.weight.copy_(0.4 * pat(D * S_DIM, 0.71, 0.3).reshape(D, S_DIM))
        crd.embed_s.linear.bias.copy_(0.1 * pat(D, 1.1, 0.0, torch.cos))
        crd.embed_t.linear.weight.copy_(0.3 * pat(D * T_DIM, 0.61, 0.5, torch.cos).reshape(D, T_DIM))
        crd.embed_t.linear.bias.copy_(0.1 * pat(D, 0.9, 0.4))
        crd.memory.student.bank.copy_(0.5 * pat(N * D, 0.29, 0.7).reshape(N, D))
        crd.memory.teacher.bank.copy_(0.5 * pat(N * D, 0.43, 0.9, torch.cos).reshape(N, D))
    return crd


def test_loss_gradients_z_and_memory_equal_reference_over_two_calls():
    crd = reference_crd()
    for call in (1, 2):
        want = REFERENCE[call]
        f_s, f_t, index, contrast_idx = inputs(call)
        f_s.requires_grad_()
        crd.zero_grad()
        loss = crd.contrast_loss(f_s, f_t, index, contrast_idx)
        loss.backward()
        w_s, b_s = crd.embed_s.linear.weight.grad, crd.embed_s.linear.bias.grad
        w_t, b_t = crd.embed_t.linear.weight.grad, crd.embed_t.linear.bias.grad
        assert loss.item() == pytest.approx(want["loss"], rel=1e-9)
        assert f_s.grad[1].tolist() == pytest.approx(want["grad_f_s_row1"], rel=1e-7, abs=1e-12)
        assert f_s.grad.abs().sum().item() == pytest.approx(want["grad_f_s_abs"], rel=1e-9)
        assert w_s.abs().sum().item() == pytest.approx(want["grad_embed_s_w_abs"], rel=1e-9)
        assert [w_s[0, 0].item(), w_s[3, 5].item()] == pytest.approx(want["grad_embed_s_w_00_35"], rel=1e-7)
        assert b_s.abs().sum().item() == pytest.approx(want["grad_embed_s_b_abs"], rel=1e-9)
        assert w_t.abs().sum().item() == pytest.approx(want["grad_embed_t_w_abs"], rel=1e-9)
        assert [w_t[0, 0].item(), w_t[7, 9].item()] == pytest.approx(want["grad_embed_t_w_00_79"], rel=1e-7)
        assert b_t.abs().sum().item() == pytest.approx(want["grad_embed_t_b_abs"], rel=1e-9)
        assert crd.memory.teacher.z.item() == pytest.approx(Z_V1, rel=1e-12)
        assert crd.memory.student.z.item() == pytest.approx(Z_V2, rel=1e-12)
        assert crd.memory.student.bank.abs().sum().item() == pytest.approx(want["memory_v1_abs"], rel=1e-12)
        assert crd.memory.teacher.bank.abs().sum().item() == pytest.approx(want["memory_v2_abs"], rel=1e-12)
        assert crd.memory.student.bank[3].tolist() == pytest.approx(want["memory_v1_row3"], rel=1e-12)


def test_nce_sums_negatives_and_averages_over_the_batch():
    probs = torch.tensor([[0.5, 0.1, 0.2], [0.3, 0.05, 0.4]], dtype=torch.float64)
    noise = 2 / 10
    want = -(torch.log(probs[:, 0] / (probs[:, 0] + noise + 1e-7)).sum()
             + torch.log(noise / (probs[:, 1:] + noise + 1e-7)).sum()) / 2
    assert nce_loss(probs, 10).item() == pytest.approx(want.item(), rel=1e-12)


def test_heads_are_sized_from_the_probes():
    crd = CRD()
    crd.setup(probe(256), probe(256), torch.arange(50_000) % 100)
    assert crd.extra_parameter_count() == 65_792  # methods.md §7, resnet32x4 -> resnet8x4
    assert crd.memory.student.bank.shape == crd.memory.teacher.bank.shape == (50_000, 128)
    cross = CRD(num_negatives=32)
    cross.setup(probe(1280), probe(512), torch.arange(1000) % 10)
    assert cross.extra_parameter_count() == 229_632  # vgg13 -> MobileNetV2


def test_k_not_below_the_number_of_training_samples_names_the_config_field():
    with pytest.raises(ValueError, match="num_negatives"):
        CRD(num_negatives=256).setup(probe(8), probe(8), torch.arange(256) % 100)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        CRD(mode="queue")


def batch_of(index: torch.Tensor, labels: torch.Tensor) -> Batch:
    return Batch(torch.zeros(len(index), 3, 32, 32), labels[index], index)


def features(call: int, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    f_s = pat(8 * dim, 0.37 + 0.1 * call, 0.1).reshape(8, dim).float()
    f_t = pat(8 * dim, 0.53 + 0.1 * call, 0.2, torch.cos).reshape(8, dim).float()
    return f_s, f_t


def test_forward_draws_its_negatives_weights_the_term_and_trains_only_student_side():
    labels = torch.arange(200) % 10
    torch.manual_seed(0)
    crd = CRD(weight=0.8, feat_dim=8, num_negatives=32)
    crd.setup(probe(16), probe(16), labels)
    f_s, f_t = features(1)
    f_s.requires_grad_()
    terms = crd(ModelOutput(torch.zeros(8, 10), [f_s]), ModelOutput(torch.zeros(8, 10), [f_t]),
                batch_of(torch.arange(0, 80, 10), labels), epoch=1)
    assert list(terms) == ["crd"] and terms["crd"].dtype == torch.float32
    terms["crd"].backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert crd.embed_t.linear.weight.grad.abs().sum() > 0
    assert crd.memory.student.z.item() > 0 and crd.memory.teacher.z.item() > 0


def test_half_precision_features_give_a_float32_loss():
    labels = torch.arange(200) % 10
    crd = CRD(feat_dim=8, num_negatives=32)
    crd.setup(probe(16), probe(16), labels)
    f_s, f_t = features(1)
    terms = crd(ModelOutput(torch.zeros(8, 10), [f_s.bfloat16()]), ModelOutput(torch.zeros(8, 10), [f_t.bfloat16()]),
                batch_of(torch.arange(8), labels), epoch=1)
    assert terms["crd"].dtype == torch.float32 and torch.isfinite(terms["crd"])


def test_forward_before_setup_is_a_clear_error():
    with pytest.raises(RuntimeError, match="setup"):
        CRD()(probe(4), probe(4), batch_of(torch.arange(2), torch.arange(4)), epoch=1)


def run_epoch(crd: CRD, labels: torch.Tensor, epoch: int) -> list[float]:
    losses = []
    for step in range(3):
        f_s, f_t = features(10 * epoch + step)
        index = (torch.arange(8) * 7 + 3 * step + epoch) % len(labels)
        out = crd(ModelOutput(torch.zeros(8, 10), [f_s]), ModelOutput(torch.zeros(8, 10), [f_t]),
                  batch_of(index, labels), epoch=epoch)
        losses.append(out["crd"].item())
    return losses


def test_state_dict_holds_banks_z_and_seed_and_resume_is_exact():
    labels = torch.arange(120) % 6
    torch.manual_seed(0)
    crd = CRD(feat_dim=8, num_negatives=24, mode="relax")
    crd.setup(probe(16), probe(16), labels)
    run_epoch(crd, labels, epoch=1)
    state = {k: v.clone() for k, v in crd.state_dict().items()}
    assert {"memory.student.bank", "memory.student.z", "memory.teacher.bank", "memory.teacher.z",
            "sampler.seed"} <= set(state)
    assert state["memory.student.z"].item() > 0 and state["memory.teacher.z"].item() > 0
    want = run_epoch(crd, labels, epoch=2)

    torch.manual_seed(1)
    resumed = CRD(feat_dim=8, num_negatives=24, mode="relax")
    resumed.setup(probe(16), probe(16), labels)
    resumed.load_state_dict(state)
    assert run_epoch(resumed, labels, epoch=2) == want
    for name, value in crd.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_crd_and_crd_kd_configs_carry_the_published_recipe(tmp_path):
    crd = compose_config(["experiment=crd_resnet32x4_8x4"], run_dir=tmp_path)
    assert crd.distiller.ce_weight == 1.0
    method = crd.distiller.method
    assert method._target_ == "distillbench.distillers.crd.CRD"
    assert (method.weight, method.feat_dim, method.num_negatives) == (0.8, 128, 16384)
    assert (method.temperature, method.momentum, method.mode) == (0.07, 0.5, "exact")
    assert crd.published.acc1 == 75.51

    both = compose_config(["experiment=crd_kd_resnet32x4_8x4"], run_dir=tmp_path)
    assert both.distiller.ce_weight == 1.0
    assert both.distiller.method._target_ == "distillbench.distillers.combined.Combined"
    assert both.distiller.method.kd.weight == 1.0 and both.distiller.method.kd.temperature == 4.0
    assert both.distiller.method.crd.weight == 0.8 and both.distiller.method.crd.num_negatives == 16384
    assert both.published.acc1 == 75.46
