"""DKD against mdistiller (megvii-research/mdistiller @ a08d46f), ``mdistiller/distillers/DKD.py``.

The pinned numbers were computed once in float64 by running that file's ``dkd_loss`` (loss
values, d loss / d student logits) and its ``DKD.forward_train`` (the ``loss_kd`` term with the
warm-up, ``cfg.DKD`` = CE 1.0, alpha 1.0, beta 8.0, T 4, warmup 20) on the inputs built below;
only the numbers are kept here. Gradient summaries: row 0 of d loss / d z_s, the sum of
|d loss / d z_s| and the sum of its first column.
"""

from __future__ import annotations

import pytest
import torch

from distillbench.distillers import Batch
from distillbench.distillers.dkd import DKD, dkd_loss, nckd_loss, tckd_loss
from distillbench.models import ModelOutput
from tests.helpers import compose_config

B, C = 6, 10
LABELS = torch.tensor([3, 0, 7, 2, 9, 5])

# case -> (T, alpha, beta, loss, TCKD, NCKD, grad row 0, sum |grad|, sum of grad column 0)
REFERENCE = {
    "plain_T4": (4.0, 1.0, 8.0, 38.22649311155191, 0.29209967075192395, 4.741799180099998,
                 [-0.20140261790530417, -0.5181351364960894, 0.1337070492733204, 0.06498535983186604,
                  0.6813941032166029, 0.41534986681167996, -0.2979142732755366, -0.4451952815966234,
                  0.026618187249003167, 0.1405927428910809],
                 19.83967090726228, -0.12666487124224118),
    "plain_T1": (1.0, 1.0, 2.0, 4.221814163751492, 0.08714767656838047, 2.0673332435915555,
                 [-0.00962672007625463, -0.1206030526965626, 0.04081589390586543, 0.036945434348967195,
                  0.09199140595427456, 0.06527613195478661, -0.04261693636523669, -0.06635617991224593,
                  0.0027362152539422858, 0.0014378076324637794],
                 2.690932932717339, 0.12074678806747371),
    # Student target probability ~1e-11: an epsilon inside TCKD's log would change the value.
    "peaked_student": (1.0, 1.0, 8.0, 16.566286516339353, 0.027620567606910562, 2.0673332435915555,
                       [-0.03428250913108788, -0.47066332312505943, 0.18951018263525568, -8.736310246979737e-05,
                        0.4138898154646427, 0.294450918087549, -0.15357969959196283, -0.2588840286020907,
                        0.01314747207555038, 0.00649853528967302],
                       10.612190034242522, 0.4927314104214081),
    # Teacher target logit 2000 at T = 4: masked only because 1000 is subtracted after dividing by T.
    "huge_teacher": (4.0, 1.0, 8.0, 78.23168599227053, 40.29729255147054, 4.741799180099998,
                     [-0.145070298993566, -0.4453879336062317, 0.22264464888038416, -0.5766388669392906,
                      0.783682763808631, 0.5097731981845649, -0.2182594714213135, -0.3823571851441579,
                      0.07448687978916305, 0.17712626544181634],
                     24.31563493613424, -0.3912887548313145),
}

# DKD.forward_train's loss_kd at a 1-based epoch (warm-up 20): loss, grad row 0, sum |grad|, column-0 sum.
DISTILLER_REFERENCE = {
    1: (1.9113246555775956,
        [-0.010070130895265211, -0.025906756824804474, 0.006685352463666016, 0.0032492679915933002,
         0.03406970516083015, 0.020767493340584, -0.014895713663776828, -0.02225976407983117,
         0.0013309093624501583, 0.007029637144554045],
        0.9919835453631142, -0.006333243562112078),
    7: (13.379272589043168,
        [-0.07049091626685645, -0.18134729777363126, 0.04679746724566214, 0.022744875941153115,
         0.23848793612581104, 0.14537245338408802, -0.10426999564643774, -0.15581834855881815,
         0.009316365537151126, 0.04920746001187832],
        6.943884817541799, -0.044332704934784445),
    20: (38.22649311155191, REFERENCE["plain_T4"][6], 19.83967090726228, -0.12666487124224118),
}


def wave(n: int, freq: float, phase: float, scale: float) -> torch.Tensor:
    return scale * torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase)


def logits(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    student = wave(B * C, 0.37, 0.2, 3.0).reshape(B, C)
    teacher = wave(B * C, 1.13, 0.5, 4.0).reshape(B, C)
    if case == "peaked_student":
        student[torch.arange(B), LABELS] = -25.0
    if case == "huge_teacher":
        teacher[torch.arange(B), LABELS] = 2000.0
    return student.requires_grad_(), teacher


def batch() -> Batch:
    return Batch(torch.zeros(B, 3, 32, 32), LABELS, torch.arange(B))


def assert_grad(grad: torch.Tensor, row0: list[float], abs_sum: float, col0_sum: float) -> None:
    assert grad[0].tolist() == pytest.approx(row0, rel=1e-6, abs=1e-12)
    assert grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-6)
    assert grad[:, 0].sum().item() == pytest.approx(col0_sum, rel=1e-6)


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_dkd_loss_and_gradient_equal_reference(case):
    temperature, alpha, beta, want, want_tckd, want_nckd, row0, abs_sum, col0 = REFERENCE[case]
    student, teacher = logits(case.removesuffix("_T4").removesuffix("_T1"))
    loss = dkd_loss(student, teacher, LABELS, alpha, beta, temperature)
    loss.backward()
    assert loss.item() == pytest.approx(want, rel=1e-9)
    assert_grad(student.grad, row0, abs_sum, col0)
    with torch.no_grad():
        assert tckd_loss(student, teacher, LABELS, temperature).item() == pytest.approx(want_tckd, rel=1e-9)
        assert nckd_loss(student, teacher, LABELS, temperature).item() == pytest.approx(want_nckd, rel=1e-9)


@pytest.mark.parametrize("epoch", sorted(DISTILLER_REFERENCE))
def test_distiller_warmup_equals_reference(epoch):
    want, row0, abs_sum, col0 = DISTILLER_REFERENCE[epoch]
    student, teacher = logits("plain")
    terms = DKD(alpha=1.0, beta=8.0, temperature=4.0, warmup=20)(
        ModelOutput(student, [student]), ModelOutput(teacher, [teacher]), batch(), epoch
    )
    assert list(terms) == ["tckd", "nckd"]
    total = terms["tckd"] + terms["nckd"]
    total.backward()
    assert total.item() == pytest.approx(want, rel=1e-9)
    assert_grad(student.grad, row0, abs_sum, col0)


def test_warmup_is_linear_in_the_one_based_epoch_and_then_flat():
    dkd = DKD(warmup=20)
    assert [dkd.warmup_factor(e) for e in (1, 10, 20, 21, 240)] == [0.05, 0.5, 1.0, 1.0, 1.0]
    student, teacher = logits("plain")
    s, t = ModelOutput(student.detach(), []), ModelOutput(teacher, [])
    late = sum(dkd(s, t, batch(), 240).values())
    assert late.item() == pytest.approx(DISTILLER_REFERENCE[20][0], rel=1e-12)


def test_warmup_must_be_positive():
    with pytest.raises(ValueError, match="warmup"):
        DKD(warmup=0)


def test_tckd_takes_the_log_without_epsilon():
    # The student's target probability underflows to 0: log(0) makes TCKD infinite, as in the reference.
    student = torch.zeros(2, 5, dtype=torch.float64)
    student[:, 1] = -1000.0
    teacher = torch.zeros(2, 5, dtype=torch.float64)
    assert torch.isinf(tckd_loss(student, teacher, torch.tensor([1, 1]), 1.0))


def test_nckd_is_kl_between_the_renormalised_non_target_distributions():
    student, teacher = logits("plain")
    student, temperature = student.detach(), 4.0
    keep = ~torch.nn.functional.one_hot(LABELS, C).bool()
    s = (student / temperature)[keep].reshape(B, C - 1)
    t = (teacher / temperature)[keep].reshape(B, C - 1)
    want = torch.nn.functional.kl_div(s.log_softmax(1), t.softmax(1), reduction="batchmean") * temperature**2
    assert nckd_loss(student, teacher, LABELS, temperature).item() == pytest.approx(want.item(), rel=1e-12)


def test_huge_teacher_target_logit_is_still_masked_after_dividing_by_t():
    plain_s, plain_t = logits("plain")
    huge_s, huge_t = logits("huge_teacher")
    assert nckd_loss(huge_s, huge_t, LABELS, 4.0).item() == pytest.approx(
        nckd_loss(plain_s, plain_t, LABELS, 4.0).item(), rel=1e-12
    )


def test_identical_logits_give_zero():
    student, _ = logits("plain")
    assert dkd_loss(student, student.detach(), LABELS, 1.0, 8.0, 4.0).item() == pytest.approx(0.0, abs=1e-12)


def test_dkd_is_computed_in_float32_for_half_precision_logits():
    student, teacher = logits("plain")
    loss = dkd_loss(student.detach().bfloat16(), teacher.bfloat16(), LABELS, 1.0, 8.0, 4.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(REFERENCE["plain_T4"][3], rel=2e-2)


def test_experiment_uses_the_mdistiller_recipe(tmp_path):
    cfg = compose_config(["experiment=dkd_resnet32x4_8x4"], run_dir=tmp_path)
    assert cfg.trainer.epochs == 240 and cfg.dataset.batch_size == 64
    assert cfg.optim.lr == 0.05 and cfg.optim.weight_decay == 5e-4
    assert list(cfg.sched.milestones) == [150, 180, 210]
    assert cfg.distiller.ce_weight == 1.0
    method = cfg.distiller.method
    assert (method.alpha, method.beta, method.temperature, method.warmup) == (1.0, 8.0, 4.0, 20)
    assert cfg.published.acc1 == 76.32 and cfg.published.metric == "best_epoch"
