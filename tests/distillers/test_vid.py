"""VID against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, by running
``distiller_zoo/VID.py::VIDLoss`` as ``train_student.py`` and ``helper/loops.py`` wire
``--distill vid``: one ``VIDLoss(C_s, C_t, C_t)`` per pair of ``zip(feat_s[1:-1], feat_t[1:-1])``,
losses summed, on the features of ``features()`` below, with every regressor weight and
log-scale set as ``fill_heads()`` does. Only the numbers are kept here.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distillbench.distillers.base import Batch
from distillbench.distillers.vid import VID
from distillbench.models import ModelOutput

REF_LOSS = 1.6846004125132623
# VIDLoss's float32 log_scale at construction, log(exp(5 - 1e-5) - 1).
REF_INIT_LOG_SCALE = 4.993229389190674
# d loss / d student stage maps: sum |grad| and grad[0, 0, 0, :4].
REF_GRAD_S1_ABS = 0.026245058920142037
REF_GRAD_S1_FIRST = [2.8242921855805045e-05, 2.8242921855805045e-05, -1.3330692938006214e-06,
                     -1.3330692938006214e-06]
REF_GRAD_S2_ABS = 0.06836663800088506
REF_GRAD_S2_FIRST = [0.00042141801750262355, 0.0002818942963023577, 0.00013775015210969625,
                     1.584731356397601e-05]
# Per head: sum |grad| of the three regressor convs, and the full log-scale gradient.
REF_HEADS = [
    ([0.005193994674658969, 0.006461309454008076, 0.0035130523504226744],
     [0.017899211474029123, 0.016404081399505582, 0.01831167304394519, 0.019263746476068776,
      0.017196428210910802]),
    ([0.14165908462221674, 0.12029067626756874, 0.16788124043728436],
     [0.012171588950281437, 0.012741395466467426, 0.015354534338354422, 0.014028665833238717,
      0.011952061183641852, 0.013441230949531752, 0.015479100962027393]),
]


def wave(shape: tuple[int, ...], freq: float, phase: float, scale: float = 1.0) -> torch.Tensor:
    n = math.prod(shape)
    return (scale * torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase)).reshape(shape)


def features() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Student 8x8 -> teacher 4x4 (student pooled), student 4x4 <- teacher 8x8 (teacher pooled);
    the teacher's third stage has no partner and is dropped, as zip does in the reference."""
    b = 3
    student = [wave((b, 3, 8, 8), 0.1, 0.0), wave((b, 4, 8, 8), 0.31, 0.2).requires_grad_(),
               wave((b, 6, 4, 4), 0.43, 0.9).requires_grad_(), wave((b, 6), 0.2, 0.0)]
    teacher = [wave((b, 3, 8, 8), 0.15, 0.0), wave((b, 5, 4, 4), 0.29, 0.4), wave((b, 7, 8, 8), 0.47, 1.3),
               wave((b, 3, 2, 2), 0.3, 0.3), wave((b, 3), 0.2, 0.0)]
    return student, teacher


def output(feats: list[torch.Tensor]) -> ModelOutput:
    return ModelOutput(torch.zeros(feats[0].shape[0], 10, dtype=feats[0].dtype), feats)


def batch(b: int = 3) -> Batch:
    return Batch(torch.zeros(b, 3, 32, 32), torch.zeros(b, dtype=torch.long), torch.arange(b))


def fill_heads(vid: VID) -> None:
    with torch.no_grad():
        for i, head in enumerate(vid.heads):
            for j, index in enumerate((0, 2, 4)):
                weight = head.regressor[index].weight
                weight.copy_(wave(tuple(weight.shape), 0.23 + 0.05 * j, float(i), 0.4))
            head.log_scale.copy_(REF_INIT_LOG_SCALE + wave(tuple(head.log_scale.shape), 1.7, float(i), 0.5))


def built_vid() -> tuple[VID, list[torch.Tensor], list[torch.Tensor]]:
    student, teacher = features()
    vid = VID()
    vid.setup(output([f.detach() for f in student]), output(teacher), torch.zeros(3, dtype=torch.long))
    fill_heads(vid)
    return vid, student, teacher


def test_loss_and_gradients_equal_reference():
    vid, student, teacher = built_vid()
    (loss,) = vid(output(student), output(teacher), batch(), 1).values()
    loss.backward()
    assert loss.item() == pytest.approx(REF_LOSS, rel=1e-9)
    assert student[1].grad.abs().sum().item() == pytest.approx(REF_GRAD_S1_ABS, rel=1e-9)
    assert student[1].grad[0, 0, 0, :4].tolist() == pytest.approx(REF_GRAD_S1_FIRST, rel=1e-7)
    assert student[2].grad.abs().sum().item() == pytest.approx(REF_GRAD_S2_ABS, rel=1e-9)
    assert student[2].grad[0, 0, 0, :4].tolist() == pytest.approx(REF_GRAD_S2_FIRST, rel=1e-7)
    for head, (conv_abs, log_scale_grad) in zip(vid.heads, REF_HEADS, strict=True):
        got = [head.regressor[i].weight.grad.abs().sum().item() for i in (0, 2, 4)]
        assert got == pytest.approx(conv_abs, rel=1e-9)
        assert head.log_scale.grad.tolist() == pytest.approx(log_scale_grad, rel=1e-9)


def test_heads_follow_the_zipped_stage_pairs():
    vid, _, _ = built_vid()
    assert len(vid.heads) == 2
    assert [head.regressor[0].weight.shape[:2] for head in vid.heads] == [(5, 4), (7, 6)]


def test_variance_is_a_trained_parameter_starting_at_init_var():
    """RepDistiller optimises log_scale (mdistiller leaves it out of the optimiser)."""
    vid = VID()
    student = [torch.zeros(2, 3, 8, 8), torch.zeros(2, 4, 8, 8), torch.zeros(2, 6)]
    teacher = [torch.zeros(2, 3, 8, 8), torch.zeros(2, 5, 8, 8), torch.zeros(2, 9)]
    vid.setup(output(student), output(teacher), torch.zeros(2, dtype=torch.long))
    (head,) = vid.heads
    assert any(p is head.log_scale for p in vid.parameters())
    assert head.log_scale.requires_grad
    assert head.log_scale.tolist() == [REF_INIT_LOG_SCALE] * 5
    assert (F.softplus(head.log_scale) + 1e-5).tolist() == pytest.approx([5.0] * 5, rel=1e-6)
    # Three bias-free 1x1 convs (4->5, 5->5, 5->5) and five log-scales.
    assert vid.extra_parameter_count() == 4 * 5 + 5 * 5 + 5 * 5 + 5


def test_forward_before_setup_is_refused():
    student, teacher = features()
    with pytest.raises(RuntimeError, match="setup"):
        VID()(output(student), output(teacher), batch(), 1)


def test_autocast_keeps_the_loss_in_float32():
    vid, student, teacher = built_vid()
    vid.float()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = vid(output([f.detach().float() for f in student]), output([f.bfloat16() for f in teacher]), batch(), 1)
    assert loss["vid"].dtype == torch.float32
    assert loss["vid"].item() == pytest.approx(REF_LOSS, rel=2e-2)
