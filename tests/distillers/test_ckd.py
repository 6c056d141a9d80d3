"""CKD against the released code (ZhouXinzzzzz/CKD @ f16a145), ``mdistiller/distillers/CKD.py``.

The pinned numbers were computed once in float64 by running that file's ``contrastive_loss``
(the function its ``CKD`` distiller calls; ``ckd_loss`` there gives the same values) and
``CKD.forward_train`` (the ``loss_kd`` term, with CL_WEIGHT and TEMPERATURE as listed) on the
inputs built below; only the numbers are kept here. Gradient summaries: row 0 of
d loss / d z_s, the sum of |d loss / d z_s| and the sum of its first column.
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from distillbench.distillers import Batch
from distillbench.distillers.ckd import CKD, ckd_loss
from distillbench.models import ModelOutput
from tests.helpers import compose_config

C = 10

# (batch size, tau) -> (loss, grad row 0, sum |grad|, sum of grad column 0)
REFERENCE = {
    (6, 1.0): (1.7954670389488798,
               [-0.0009305910280428533, -0.011766198480750188, -0.014057500951661252, -0.006311792053012006,
                0.005101039195175666, 0.011095181749680591, 0.007161347595618459, -0.0030579788703705,
                -0.010777602475213503, -0.009229561486440066],
               0.4028337818907154, -0.001335369643159934),
    (6, 2.0): (1.790856534467782,
               [-0.0004960361570193532, -0.005616622636414909, -0.006659777716237032, -0.002954118457256479,
                0.0024528721561950092, 0.005257123061206139, 0.003352427394970728, -0.001500222532315416,
                -0.005127013871867537, -0.00434331060920464],
               0.20401484571824352, -0.0004819875709212039),
    (5, 0.5): (1.5525264123061504,
               [-0.004636222268679107, -0.0273147879869335, -0.030216018893479607, -0.011841552210714836,
                0.012696168374098902, 0.023884557835535523, 0.013468375448824836, -0.009033634796456467,
                -0.024174051303440393, -0.018442456672344006],
               0.6861016183677752, -0.001792161012574696),
}

# CKD.forward_train's loss_kd on the batch of 6, (CL_WEIGHT, TEMPERATURE) -> as above.
DISTILLER_REFERENCE = {
    (100.0, 1.0): (179.54670389488797,
                   [-0.09305910280428539, -1.1766198480750187, -1.4057500951661255, -0.6311792053012008,
                    0.5101039195175668, 1.1095181749680594, 0.7161347595618461, -0.30579788703705013,
                    -1.0777602475213506, -0.9229561486440067],
                   40.28337818907154, -0.1335369643159935),
    (50.0, 2.0): (89.5428267233891,
                  [-0.024801807850967677, -0.2808311318207455, -0.3329888858118516, -0.14770592286282397,
                   0.12264360780975045, 0.2628561530603069, 0.1676213697485364, -0.07501112661577082,
                   -0.2563506935933769, -0.21716553046023207],
                  10.200742285912177, -0.02409937854606021),
}


def logits(batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.arange(batch_size * C, dtype=torch.float64)
    student = (3.0 * torch.sin(0.41 * a + 0.3)).reshape(batch_size, C).requires_grad_()
    teacher = (4.0 * torch.sin(0.93 * a + 0.1)).reshape(batch_size, C)
    return student, teacher


def assert_grad(grad: torch.Tensor, row0: list[float], abs_sum: float, col0_sum: float) -> None:
    assert grad[0].tolist() == pytest.approx(row0, rel=1e-6, abs=1e-12)
    assert grad.abs().sum().item() == pytest.approx(abs_sum, rel=1e-6)
    assert grad[:, 0].sum().item() == pytest.approx(col0_sum, rel=1e-6)


@pytest.mark.parametrize(("batch_size", "tau"), sorted(REFERENCE))
def test_ckd_loss_and_gradient_equal_reference(batch_size, tau):
    want, row0, abs_sum, col0 = REFERENCE[(batch_size, tau)]
    student, teacher = logits(batch_size)
    loss = ckd_loss(student, teacher, tau)
    loss.backward()
    assert loss.item() == pytest.approx(want, rel=1e-9)
    assert_grad(student.grad, row0, abs_sum, col0)


@pytest.mark.parametrize(("weight", "tau"), sorted(DISTILLER_REFERENCE))
def test_distiller_equals_reference(weight, tau):
    want, row0, abs_sum, col0 = DISTILLER_REFERENCE[(weight, tau)]
    student, teacher = logits(6)
    batch = Batch(torch.zeros(6, 3, 32, 32), torch.zeros(6, dtype=torch.long), torch.arange(6))
    terms = CKD(weight=weight, temperature=tau)(ModelOutput(student, [student]), ModelOutput(teacher, [teacher]),
                                               batch, 3)
    assert list(terms) == ["ckd"]
    terms["ckd"].backward()
    assert terms["ckd"].item() == pytest.approx(want, rel=1e-9)
    assert_grad(student.grad, row0, abs_sum, col0)


def test_only_the_teacher_anchored_direction_is_used():
    # Student rows nearly alike, teacher rows of different lengths and directions: the softmax over
    # students (rows of S) and over teachers (columns) differ, and only the former counts.
    student = torch.eye(6, C, dtype=torch.float64) + 0.1
    teacher = torch.eye(6, C, dtype=torch.float64) * torch.arange(1, 7, dtype=torch.float64).unsqueeze(1) + 1.0
    s = torch.nn.functional.normalize(student, dim=1)
    t = torch.nn.functional.normalize(teacher, dim=1)
    rows = torch.nn.functional.cross_entropy(t @ s.T / 0.1, torch.arange(6))
    columns = torch.nn.functional.cross_entropy(s @ t.T / 0.1, torch.arange(6))
    assert ckd_loss(student, teacher, 0.1).item() == pytest.approx(rows.item(), rel=1e-12)
    assert rows.item() - columns.item() > 0.03


def test_loss_ignores_the_scale_of_each_logit_vector():
    student, teacher = logits(6)
    scale = torch.linspace(0.5, 3.0, 6, dtype=torch.float64).unsqueeze(1)
    assert ckd_loss(student * scale, teacher / scale, 1.0).item() == pytest.approx(
        ckd_loss(student, teacher, 1.0).item(), rel=1e-12
    )


def test_a_batch_of_one_has_no_negatives_and_gives_zero():
    student, teacher = logits(1)
    assert ckd_loss(student, teacher, 1.0).item() == 0.0


def test_perfectly_aligned_batch_reaches_the_lower_bound():
    # Orthogonal one-hot rows, identical for both networks: S = I, so the loss is log(1 + (B - 1) e^{-1/tau}).
    eye = torch.eye(4, C, dtype=torch.float64)
    assert ckd_loss(eye, eye, 1.0).item() == pytest.approx(math.log(1 + 3 * math.exp(-1.0)), rel=1e-12)


def test_ckd_stays_in_float32_under_autocast():
    student, teacher = logits(6)
    s, t = student.detach().float(), teacher.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ckd_loss(s, t, 1.0)
    assert loss.dtype == torch.float32
    assert loss.item() == ckd_loss(s, t, 1.0).item()
    half = ckd_loss(s.bfloat16(), t.bfloat16(), 1.0)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(REFERENCE[(6, 1.0)][0], rel=2e-2)


def test_experiment_uses_the_released_recipe(tmp_path):
    cfg = compose_config(["experiment=ckd_resnet32x4_8x4"], run_dir=tmp_path)
    assert cfg.trainer.epochs == 480 and cfg.dataset.batch_size == 64
    assert cfg.optim.lr == 0.05 and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4
    assert cfg.distiller.ce_weight == 1.0
    assert cfg.distiller.method.weight == 100.0 and cfg.distiller.method.temperature == 1.0
    assert cfg.published is None
    optimizer = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(1))])
    scheduler = instantiate(cfg.sched)(optimizer)
    lrs = []
    for _ in range(480):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Stepped after each epoch: epoch 1 runs at the base lr, epoch e at 0.05 * (1 + cos(pi (e - 1) / 480)) / 2.
    assert lrs[0] == 0.05
    assert lrs[240] == pytest.approx(0.025, rel=1e-9)
    assert lrs[479] == pytest.approx(0.025 * (1 + math.cos(math.pi * 479 / 480)), rel=1e-6)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
