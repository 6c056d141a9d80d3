"""DOT against mdistiller's ``DistillationOrientedTrainer`` (megvii-research/mdistiller @ a08d46f,
``mdistiller/engine/dot.py``), driven as its ``engine/trainer.py`` class ``DOT`` drives it.

The pinned numbers were computed once by running that optimiser in float64 on the problem of ``problem()``
below (lr 0.05, momentum 0.9 - 0.075 / 0.9 + 0.075, weight decay 5e-4), three steps of
``zero_grad; kd.backward(retain_graph=True); step_kd(); zero_grad; ce.backward(); step()``; only the
numbers are kept here. The four parameters cover every branch of the update: ``weight`` and ``bias``
get both gradients, ``head`` only the distillation one, ``offset`` only the task one.
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from distillbench.optim import DOT, LossSplittingOptimizer

# After steps 1, 2, 3: each parameter (weight, bias, head, offset) flattened, its task momentum buffer and its
# distillation momentum buffer (None: the parameter has none).
REFERENCE = [
    {
        "param": [
            [0.15273040480985137, 0.28560514379523944, 0.17414462956971538, -0.11232287966543107, -0.2793208684510788,
             -0.2081560867633084],
            [0.0900308941193323, 0.06267088902706694],
            [1.167816636036113, 0.028423565201351617, -0.19130729400716137, 1.1311977561543798],
            [0.029255991678886782, -0.023537057339359808],
        ],
        "task": [
            [0.01420452962952256, 0.30409833577722706, -0.09236708103463798, -0.0141852332828854,
             -0.30409534104688624, 0.09235102080741804],
            [0.059131748217774484, -0.059054733102481105],
            None,
            [0.05909785365995542, -0.05909499412129722],
        ],
        "distill": [
            [-0.19225939420133148, -0.031231292057689625, 0.2003073542640692, 0.15594346045378799,
             0.02533200407788077, -0.16247123896360147],
            [0.1402503693955798, -0.113758435702578],
            [0.009551218509326663, -0.0039912717875634825, -0.009551218509326685, 0.0039912717875634956],
            None,
        ],
    },
    {
        "param": [
            [0.16030601484790616, 0.27855351589015026, 0.16836787463765943, -0.11568714367531269, -0.2730164013343234,
             -0.20639850846090124],
            [0.07356151590393557, 0.07687532881047685],
            [1.1658427166514786, 0.030190090648771453, -0.18935778735607772, 1.129402240173926],
            [0.024529142572160937, -0.018810479885232066],
        ],
        "task": [
            [0.2949618851451482, 0.06179124355741772, -0.3105193730655619, -0.2949257618966004, -0.06178563076721441,
             0.3104891176495086],
            [0.09016299357144122, -0.09002310520975101],
            None,
            [0.09453698213451692, -0.09453154908255482],
        ],
        "distill": [
            [-0.44647408590624393, 0.07924131454436559, 0.426054471706681, 0.3622110420942326, -0.06430371156789282,
             -0.34564068369765166],
            [0.23922457073649311, -0.19406569045844702],
            [0.03947838769268752, -0.035330508948396705, -0.038990133021673076, 0.035910319609074585],
            None,
        ],
    },
    {
        "param": [
            [0.17156685874191266, 0.25037037505327114, 0.164344430250299, -0.12074929286165179, -0.24794970753689677,
             -0.20777118678308656],
            [0.054603822360826886, 0.0931213173399547],
            [1.161633590560245, 0.03442127053732211, -0.18519504484827215, 1.1251159789973744],
            [0.01935051917842873, -0.013632243945405331],
        ],
        "task": [
            [0.4317523859731912, 0.23357531594130515, -0.49144046187937296, -0.431700274857553, -0.2335679168321095,
             0.4913964858442174],
            [0.0928981698366838, -0.09270754351593208],
            None,
            [0.10357246787464414, -0.10356471879653469],
        ],
        "distill": [
            [-0.6569692638533213, 0.3300875007962769, 0.5719093496265815, 0.5329432585843348, -0.2677659591164237,
             -0.46394291940051124],
            [0.2862557010254899, -0.23221222707362488],
            [0.08418252182467217, -0.08462359777101311, -0.08325485015611145, 0.08572522353103451],
            None,
        ],
    },
]


def problem() -> list[torch.Tensor]:
    """A linear student (weight, bias), a map applied only inside the distillation loss (head) and an
    offset applied only inside the task loss; fixed float64 values."""
    a = torch.arange(12, dtype=torch.float64)
    weight = (0.3 * torch.sin(a[:6] + 0.5)).reshape(2, 3)
    bias = 0.1 * torch.cos(a[:2])
    head = torch.eye(2, dtype=torch.float64) + 0.2 * torch.sin(2.0 * a[:4] + 1.0).reshape(2, 2)
    offset = 0.05 * torch.sin(3.0 * a[:2] + 0.7)
    return [t.clone().requires_grad_() for t in (weight, bias, head, offset)]


def losses(params: list[torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s (task, distillation) losses: CE, and 0.9 * T^2 * KL at T = 4 against fixed teacher logits."""
    weight, bias, head, offset = params
    a = torch.arange(12, dtype=torch.float64)
    x = torch.cos(1.7 * a + 0.4 * step).reshape(4, 3)
    teacher = 2.0 * torch.sin(0.9 * a[:8] + 0.2 + 0.3 * step).reshape(4, 2)
    labels = torch.tensor([0, 1, 1, 0]) if step % 2 else torch.tensor([1, 1, 0, 0])
    logits = x @ weight.T + bias
    task = F.cross_entropy(logits + offset, labels)
    log_p = F.log_softmax(logits @ head.T / 4.0, dim=1)
    kd = 0.9 * F.kl_div(log_p, F.softmax(teacher / 4.0, dim=1), reduction="none").sum(1).mean() * 16.0
    return task, kd


def make_optimizer(params: list[torch.Tensor]) -> DOT:
    return DOT(params, lr=0.05, momentum=0.9, delta=0.075, weight_decay=5e-4)


def train_step(optimizer: DOT, params: list[torch.Tensor], step: int) -> None:
    """What the trainer does with an optimiser that has ``loss_steps``."""
    parts = optimizer.loss_steps(*losses(params, step))
    for i, (loss, optimizer_step) in enumerate(parts, start=1):
        optimizer.zero_grad(set_to_none=True)
        loss.backward(retain_graph=i < len(parts))
        optimizer_step()


def snapshot(optimizer: DOT, params: list[torch.Tensor]) -> dict[str, list]:
    def flat(t):
        return None if t is None else t.detach().flatten().tolist()

    return {"param": [flat(p) for p in params],
            "task": [flat(optimizer.state[p].get("momentum_buffer")) for p in params],
            "distill": [flat(optimizer.state[p].get("momentum_kd_buffer")) for p in params]}


def assert_equal_nested(got: dict[str, list], want: dict[str, list]) -> None:
    for key in want:
        for g, w in zip(got[key], want[key], strict=True):
            if w is None:
                assert g is None, key
            else:
                assert g == pytest.approx(w, rel=1e-12, abs=1e-15), key


def test_parameters_and_both_momenta_equal_the_reference_after_each_step():
    params = problem()
    optimizer = make_optimizer(params)
    for step, want in enumerate(REFERENCE, start=1):
        train_step(optimizer, params, step)
        assert_equal_nested(snapshot(optimizer, params), want)


def test_a_state_dict_saved_after_step_one_resumes_exactly():
    params = problem()
    optimizer = make_optimizer(params)
    train_step(optimizer, params, 1)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in params], "optimizer": optimizer.state_dict()}, buffer)
    for step in (2, 3):
        train_step(optimizer, params, step)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = [p.clone().requires_grad_() for p in saved["params"]]
    again = make_optimizer(resumed)
    again.load_state_dict(saved["optimizer"])
    for step in (2, 3):
        train_step(again, resumed, step)
    assert snapshot(again, resumed) == snapshot(optimizer, params)  # bit for bit


def test_the_trainer_finds_the_split_and_the_order_is_distillation_first():
    params = problem()
    optimizer = make_optimizer(params)
    task, kd = losses(params, 1)
    assert isinstance(optimizer, LossSplittingOptimizer)
    assert not isinstance(torch.optim.SGD(params, lr=0.1), LossSplittingOptimizer)
    assert [loss for loss, _ in optimizer.loss_steps(task, kd)] == [kd, task]


def test_delta_sets_the_two_momenta_and_is_checked():
    with pytest.raises(ValueError, match="delta"):
        DOT(problem(), lr=0.1, momentum=0.9, delta=0.95)
