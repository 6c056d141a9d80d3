"""CC against RepDistiller (HobbitLong/RepDistiller, commit b84f547).

The pinned numbers were computed once, in float64, by running
``distiller_zoo/CC.py::Correlation`` on ``LinearEmbed(10, 128)(f_s)`` and
``LinearEmbed(12, 128)(f_t)`` (``models/util.py``), wired as ``train_student.py`` and
``helper/loops.py`` do for ``--distill correlation`` (both embeddings trainable, ``feat[-1]``),
with the inputs and embedding parameters of ``features()`` and ``fill_embeddings()`` below.
Only the numbers are kept here.
"""

from __future__ import annotations

import math

import pytest
import torch

from distillbench.distillers.base import Batch
from distillbench.distillers.cc import CC, correlation_congruence_loss
from distillbench.models import ModelOutput

REF_LOSS = 274.01549121054404
# d loss / d f_s: row 0 and sum of |grad|.
REF_GRAD_S_ROW0 = [8.39944564426028, 8.694261793394116, 8.883983409291728, 8.966317174229161, 8.940267853786139,
                   8.806150327044769, 8.565585780392874, 8.221482110940567, 7.777998776429671, 7.240496516523432]
REF_GRAD_S_ABS = 597.6678362444949
# Gradients of the student embedding (weight[0, :4], sum |weight grad|, sum |bias grad|).
REF_EMBED_S_W_ROW0 = [-0.7149630472590711, 0.9170324385555296, 2.4249118858052787, 3.6045908850872]
REF_EMBED_S_W_ABS = 2922.8676873205377
REF_EMBED_S_B_ABS = 80.30481600165909
# Gradients of the teacher embedding (weight[0, :4], sum |weight grad|, bias[:4], sum |bias grad|).
REF_EMBED_T_W_ROW0 = [1.1071362911136875, 1.4128219808525804, 1.3308492978028676, 0.8837103870152558]
REF_EMBED_T_W_ABS = 1242.861615906405
REF_EMBED_T_B_FIRST = [0.7218653538922154, -0.5175218041554455, -0.8923597814702965, 0.3289510913213679]
REF_EMBED_T_B_ABS = 80.30481600165909


def wave(shape: tuple[int, ...], freq: float, phase: float, scale: float = 1.0) -> torch.Tensor:
    n = math.prod(shape)
    return (scale * torch.sin(freq * torch.arange(n, dtype=torch.float64) + phase)).reshape(shape)


def features() -> tuple[torch.Tensor, torch.Tensor]:
    return wave((6, 10), 0.37, 0.1, 2.0).requires_grad_(), wave((6, 12), 0.53, 0.7, 2.0)


def output(pooled: torch.Tensor) -> ModelOutput:
    b = pooled.shape[0]
    stage = torch.zeros(b, 2, 4, 4, dtype=pooled.dtype)
    return ModelOutput(torch.zeros(b, 10, dtype=pooled.dtype), [stage, stage, pooled])


def batch(b: int) -> Batch:
    return Batch(torch.zeros(b, 3, 32, 32), torch.zeros(b, dtype=torch.long), torch.arange(b))


def fill_embeddings(cc: CC) -> None:
    with torch.no_grad():
        cc.embed_s.weight.copy_(wave((128, 10), 0.11, 0.5, 0.3))
        cc.embed_s.bias.copy_(wave((128,), 0.7, 1.1, 0.1))
        cc.embed_t.weight.copy_(wave((128, 12), 0.13, 0.2, 0.3))
        cc.embed_t.bias.copy_(wave((128,), 0.9, 0.3, 0.1))


def built_cc(weight: float = 0.02) -> tuple[CC, torch.Tensor, torch.Tensor]:
    f_s, f_t = features()
    cc = CC(weight=weight)
    cc.setup(output(f_s.detach()), output(f_t), torch.zeros(6, dtype=torch.long))
    fill_embeddings(cc)
    return cc, f_s, f_t


def test_loss_and_gradients_equal_reference():
    cc, f_s, f_t = built_cc(weight=1.0)
    (loss,) = cc(output(f_s), output(f_t), batch(6), 1).values()
    loss.backward()
    assert loss.item() == pytest.approx(REF_LOSS, rel=1e-9)
    assert f_s.grad[0].tolist() == pytest.approx(REF_GRAD_S_ROW0, rel=1e-8)
    assert f_s.grad.abs().sum().item() == pytest.approx(REF_GRAD_S_ABS, rel=1e-9)
    assert cc.embed_s.weight.grad[0, :4].tolist() == pytest.approx(REF_EMBED_S_W_ROW0, rel=1e-8)
    assert cc.embed_s.weight.grad.abs().sum().item() == pytest.approx(REF_EMBED_S_W_ABS, rel=1e-9)
    assert cc.embed_s.bias.grad.abs().sum().item() == pytest.approx(REF_EMBED_S_B_ABS, rel=1e-9)
    assert cc.embed_t.weight.grad[0, :4].tolist() == pytest.approx(REF_EMBED_T_W_ROW0, rel=1e-8)
    assert cc.embed_t.weight.grad.abs().sum().item() == pytest.approx(REF_EMBED_T_W_ABS, rel=1e-9)
    assert cc.embed_t.bias.grad[:4].tolist() == pytest.approx(REF_EMBED_T_B_FIRST, rel=1e-8)
    assert cc.embed_t.bias.grad.abs().sum().item() == pytest.approx(REF_EMBED_T_B_ABS, rel=1e-9)


def test_term_is_weighted_and_named():
    cc, f_s, f_t = built_cc()
    terms = cc(output(f_s), output(f_t), batch(6), 1)
    assert list(terms) == ["cc"]
    assert terms["cc"].item() == pytest.approx(0.02 * REF_LOSS, rel=1e-9)


def test_embeddings_are_sized_from_the_probes_and_trainable():
    cc = CC()
    cc.setup(output(torch.zeros(2, 10)), output(torch.zeros(2, 12)), torch.zeros(2, dtype=torch.long))
    assert cc.embed_s.weight.shape == (128, 10) and cc.embed_t.weight.shape == (128, 12)
    # Both embeddings (weights and biases) reach the optimiser: 2 * 128 + 10 * 128 + 12 * 128.
    assert cc.extra_parameter_count() == 128 * (10 + 1) + 128 * (12 + 1)


def test_loss_couples_consecutive_samples_only():
    """The authors' form: sum_k |d_i,k| |d_i+1,k| over consecutive pairs, so batch order matters."""
    gap_s = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    zero = torch.zeros_like(gap_s)
    # pairs (0, 1): 1*3 + 2*0 = 3; (1, 2): 3*0 + 0*5 = 0; mean 1.5.
    assert correlation_congruence_loss(gap_s, zero).item() == 1.5
    assert correlation_congruence_loss(-gap_s, zero).item() == 1.5
    # (0, 2) first: 1*0 + 2*5 = 10; (2, 1): 0 -> mean 5.
    assert correlation_congruence_loss(gap_s[[0, 2, 1]], zero).item() == 5.0


def test_one_sample_batch_is_refused():
    with pytest.raises(ValueError, match="at least two"):
        correlation_congruence_loss(torch.ones(1, 4), torch.zeros(1, 4))


def test_forward_before_setup_is_refused():
    f_s, f_t = features()
    with pytest.raises(RuntimeError, match="setup"):
        CC()(output(f_s), output(f_t), batch(6), 1)


def test_half_precision_features_give_a_float32_loss():
    cc, f_s, f_t = built_cc(weight=1.0)
    cc.float()
    with torch.no_grad():
        loss = correlation_congruence_loss(cc.embed_s(f_s.float()).bfloat16(), cc.embed_t(f_t.float()).bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(REF_LOSS, rel=2e-2)
