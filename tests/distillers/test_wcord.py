"""WCoRD (Chen et al., CVPR 2021) against independent computations: no reference code exists.

The method is a re-implementation from the paper (see ``distillbench/distillers/wcord.py``), so
nothing can be pinned to a reference run. Instead each part is checked against a computation
written here from its definition:

* the log-space Sinkhorn and IPOT plans against plain (kernel-space) float64 versions of the same
  iterations (Cuturi 2013; Xie et al. 2019, Algorithm 1), their marginals, and the exact OT plan of
  a brute force over permutations as the regulariser goes to 0 (IPOT: for any step);
* the local term <P, C> and its gradient against the cosine cost and plan computed here;
* the global term with the Lipschitz constraint off against ``distillbench.distillers.crd.CRD``
  (itself pinned to RepDistiller's ``CRDLoss`` @ b84f547 in test_crd.py) on the same heads, banks
  and contrast indices; with spectral normalisation on, against CRD with each head's weight divided
  by its largest singular value (``torch.linalg``), and the heads' weight gradients against the
  chain rule through that division;
* the gradient penalty against per-pair input gradients computed one pair at a time.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from distillbench.distillers.base import Batch
from distillbench.distillers.crd import CRD
from distillbench.distillers.wcord import WCoRD, cost_matrix, ipot_plan, sinkhorn_plan, transport_plan
from distillbench.models import ModelOutput
from tests.helpers import compose_config

B, N, K, D, S_DIM, T_DIM = 4, 20, 6, 8, 6, 10


def pat(n: int, a: float, c: float, fn=torch.sin) -> torch.Tensor:
    return fn(a * torch.arange(n, dtype=torch.float64) + c)


def probe(dim: int, batch: int = 2) -> ModelOutput:
    return ModelOutput(torch.zeros(batch, 100), [torch.zeros(batch, 3, 4, 4), torch.zeros(batch, dim)])


def plain_sinkhorn(cost: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    n, m = cost.shape
    kernel = torch.exp(-cost / epsilon)
    a, b = torch.full((n,), 1 / n, dtype=cost.dtype), torch.full((m,), 1 / m, dtype=cost.dtype)
    v = torch.ones(m, dtype=cost.dtype)
    for _ in range(iterations):
        u = a / (kernel @ v)
        v = b / (kernel.t() @ u)
    return u[:, None] * kernel * v[None, :]


def plain_ipot(cost: torch.Tensor, beta: float, iterations: int) -> torch.Tensor:
    n, m = cost.shape
    g = torch.exp(-cost / beta)
    mu, nu = torch.full((n,), 1 / n, dtype=cost.dtype), torch.full((m,), 1 / m, dtype=cost.dtype)
    b = torch.full((m,), 1 / m, dtype=cost.dtype)
    plan = torch.ones(n, m, dtype=cost.dtype)
    for _ in range(iterations):
        q = g * plan
        a = mu / (q @ b)
        b = nu / (q.t() @ a)
        plan = a[:, None] * q * b[None, :]
    return plan


def exact_permutation_plan(cost: torch.Tensor) -> torch.Tensor:
    """Uniform marginals on n = m points: an optimal plan is a permutation / n (Birkhoff)."""
    n = cost.shape[0]
    best = min(itertools.permutations(range(n)), key=lambda p: sum(cost[i, p[i]].item() for i in range(n)))
    plan = torch.zeros_like(cost)
    plan[torch.arange(n), torch.tensor(best)] = 1 / n
    return plan


def well_conditioned_cost(n: int, m: int) -> torch.Tensor:
    return 1 + 0.8 * pat(n * m, 0.77, 0.3).reshape(n, m)


def permutation_cost() -> torch.Tensor:
    """5 x 5 costs in [0.9, 1.1] but 0.8 lower on a shuffled permutation: the optimum by a wide margin."""
    cost = 1 + 0.1 * pat(25, 1.3, 0.2).reshape(5, 5)
    cost[torch.arange(5), torch.tensor([2, 0, 4, 1, 3])] -= 0.8
    return cost


# ----------------------------------------------------------------------------- solvers


@pytest.mark.parametrize(("n", "m"), [(5, 5), (4, 7)])
def test_sinkhorn_matches_plain_float64_sinkhorn_and_meets_the_marginals(n, m):
    cost = well_conditioned_cost(n, m)
    for iterations in (1, 3, 200):
        plan = sinkhorn_plan(cost, 0.5, iterations)
        assert torch.allclose(plan, plain_sinkhorn(cost, 0.5, iterations), rtol=1e-10, atol=0)
    assert torch.allclose(plan.sum(1), torch.full((n,), 1 / n, dtype=torch.float64), rtol=1e-9, atol=0)
    assert torch.allclose(plan.sum(0), torch.full((m,), 1 / m, dtype=torch.float64), rtol=1e-12, atol=0)


def test_ipot_matches_plain_float64_ipot_and_meets_the_marginals():
    cost = well_conditioned_cost(4, 6)
    for iterations in (1, 5, 100):
        plan = ipot_plan(cost, 0.5, iterations)
        assert torch.allclose(plan, plain_ipot(cost, 0.5, iterations), rtol=1e-10, atol=0)
    assert torch.allclose(plan.sum(1), torch.full((4,), 1 / 4, dtype=torch.float64), rtol=1e-8, atol=0)
    assert torch.allclose(plan.sum(0), torch.full((6,), 1 / 6, dtype=torch.float64), rtol=1e-12, atol=0)


def test_plans_tend_to_the_exact_ot_permutation():
    cost = permutation_cost()
    exact = exact_permutation_plan(cost)
    assert not torch.equal(exact, torch.eye(5, dtype=torch.float64) / 5)
    errors = [(sinkhorn_plan(cost, eps, 300) - exact).abs().max().item() for eps in (0.3, 0.1, 0.05, 0.02)]
    assert errors == sorted(errors, reverse=True) and errors[0] > 1e-2 and errors[-1] < 1e-12
    assert torch.allclose(ipot_plan(cost, 0.5, 50), exact, rtol=0, atol=1e-12)
    exact_cost = (exact * cost).sum().item()
    assert (sinkhorn_plan(cost, 0.02, 300) * cost).sum().item() == pytest.approx(exact_cost, rel=1e-12)


def test_log_space_survives_a_regulariser_that_underflows_the_kernel_in_float32():
    cost = permutation_cost().float() + 1  # a constant shift leaves the optimal plan unchanged
    assert torch.exp(-cost / 1e-3).max() == 0
    assert torch.isnan(plain_sinkhorn(cost, 1e-3, 5)).all()
    plan = transport_plan(cost, "sinkhorn", epsilon=1e-3, iterations=50)
    assert torch.isfinite(plan).all()
    assert torch.allclose(plan, exact_permutation_plan(permutation_cost()).float(), atol=1e-6)


def test_cost_matrices_follow_their_definitions():
    x, y = pat(12, 0.9, 0.1).reshape(3, 4), pat(20, 0.6, 1.0, torch.cos).reshape(5, 4)
    cos = torch.tensor([[torch.dot(xi, yj) / (xi.norm() * yj.norm()) for yj in y] for xi in x], dtype=torch.float64)
    assert torch.allclose(cost_matrix(x, y, "cosine"), 1 - cos, rtol=1e-12)
    sq = torch.tensor([[(xi - yj).pow(2).sum() for yj in y] for xi in x], dtype=torch.float64)
    assert torch.allclose(cost_matrix(x, y, "sqeuclidean"), sq, rtol=1e-12)
    with pytest.raises(ValueError, match="cost"):
        cost_matrix(x, y, "l1")


# ----------------------------------------------------------------------------- distiller


def wcord(**kwargs) -> WCoRD:
    torch.manual_seed(0)
    method = WCoRD(feat_dim=D, num_negatives=K, **kwargs)
    method.setup(probe(S_DIM), probe(T_DIM), torch.arange(N) % 4)
    return method.double()


def set_heads(method: WCoRD | CRD, w_s: torch.Tensor, w_t: torch.Tensor) -> None:
    """Fill both heads (the raw weight under a spectral norm) and the banks with fixed patterns."""
    with torch.no_grad():
        for head, weight in ((method.embed_s.linear, w_s), (method.embed_t.linear, w_t)):
            raw = head.parametrizations.weight.original if hasattr(head, "parametrizations") else head.weight
            raw.copy_(weight)
        method.embed_s.linear.bias.copy_(0.1 * pat(D, 1.1, 0.0, torch.cos))
        method.embed_t.linear.bias.copy_(0.1 * pat(D, 0.9, 0.4))
        method.memory.student.bank.copy_(0.5 * pat(N * D, 0.29, 0.7).reshape(N, D))
        method.memory.teacher.bank.copy_(0.5 * pat(N * D, 0.43, 0.9, torch.cos).reshape(N, D))


def pattern_weights() -> tuple[torch.Tensor, torch.Tensor]:
    return (0.4 * pat(D * S_DIM, 0.71, 0.3).reshape(D, S_DIM),
            0.3 * pat(D * T_DIM, 0.61, 0.5, torch.cos).reshape(D, T_DIM))


def known_spectrum(rows: int, cols: int, values: list[float], c: float) -> torch.Tensor:
    u, _ = torch.linalg.qr(pat(rows * len(values), 0.83, c).reshape(rows, len(values)))
    v, _ = torch.linalg.qr(pat(cols * len(values), 0.47, c + 1).reshape(cols, len(values)))
    return u @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ v.t()


def inputs(call: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    f_s = 2 * pat(B * S_DIM, 0.37 + 0.04 * call, 0.1 * call).reshape(B, S_DIM)
    f_t = 2 * pat(B * T_DIM, 0.53 - 0.03 * call, 0.2 * call, torch.cos).reshape(B, T_DIM)
    index = torch.tensor([3, 11, 0, 17]) if call == 1 else torch.tensor([5, 3, 19, 8])
    j = torch.arange(K)
    negatives = (index[:, None] + 2 + 3 * j[None, :] + torch.arange(B)[:, None] * (call + 1)) % N
    return f_s, f_t, index, torch.cat([index[:, None], negatives], 1)


def outputs(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[ModelOutput, ModelOutput]:
    return ModelOutput(torch.zeros(len(f_s), 10), [f_s]), ModelOutput(torch.zeros(len(f_t), 10), [f_t])


def batch_of(index: torch.Tensor, labels: torch.Tensor) -> Batch:
    return Batch(torch.zeros(len(index), 3, 32, 32), labels[index], index)


def test_global_term_without_lipschitz_is_crd_under_the_same_seed():
    labels = torch.arange(200) % 10
    torch.manual_seed(3)
    crd = CRD(weight=0.8, feat_dim=D, num_negatives=24)
    crd.setup(probe(16), probe(12), labels)
    torch.manual_seed(3)
    method = WCoRD(global_weight=0.8, local_weight=0, feat_dim=D, num_negatives=24, lipschitz="none")
    method.setup(probe(16), probe(12), labels)
    assert crd.state_dict().keys() == method.state_dict().keys()
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in crd.state_dict().items())
    for call in (1, 2):
        f_s = pat(8 * 16, 0.31 + 0.1 * call, 0.2).reshape(8, 16).float().requires_grad_()
        f_s_crd = f_s.detach().clone().requires_grad_()
        f_t = pat(8 * 12, 0.57, 0.1 * call, torch.cos).reshape(8, 12).float()
        batch = batch_of((torch.arange(8) * 13 + call) % 200, labels)
        crd.zero_grad()
        method.zero_grad()
        want = crd(*outputs(f_s_crd, f_t), batch, epoch=1)["crd"]
        got = method(*outputs(f_s, f_t), batch, epoch=1)
        assert list(got) == ["gckt"]
        got["gckt"].backward()
        want.backward()
        assert got["gckt"].item() == want.item()
        assert torch.equal(f_s.grad, f_s_crd.grad)
        for (name, p), q in zip(method.named_parameters(), crd.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad), name
        assert all(torch.equal(v, method.state_dict()[k]) for k, v in crd.state_dict().items())


def test_spectral_global_term_is_crd_with_weights_divided_by_their_largest_singular_value():
    w_s = known_spectrum(D, S_DIM, [3.0, 1.5, 1.0, 0.8, 0.5, 0.2], 0.1)
    w_t = known_spectrum(D, T_DIM, [2.0, 0.9, 0.7, 0.4, 0.3, 0.1], 0.7)
    sigma_s, sigma_t = (torch.linalg.matrix_norm(w, ord=2).item() for w in (w_s, w_t))
    assert sigma_s == pytest.approx(3.0, rel=1e-12) and sigma_t == pytest.approx(2.0, rel=1e-12)
    method = wcord(lipschitz="spectral")
    set_heads(method, w_s, w_t)
    with torch.no_grad():
        for _ in range(40):  # power iterations on the new weights (one per access in train mode)
            method.embed_s.linear.weight, method.embed_t.linear.weight  # noqa: B018
    method.eval()  # the compared call must not move u, v again
    crd = CRD(feat_dim=D, num_negatives=K)
    crd.setup(probe(S_DIM), probe(T_DIM), torch.arange(N) % 4)
    crd.double()
    set_heads(crd, w_s / sigma_s, w_t / sigma_t)
    for call in (1, 2):
        f_s, f_t, index, contrast_idx = inputs(call)
        f_s_crd = f_s.clone().requires_grad_()
        f_s.requires_grad_()
        method.zero_grad()
        crd.zero_grad()
        got = method.global_loss(*method.embed(f_s, f_t), index, contrast_idx)
        want = crd.contrast_loss(f_s_crd, f_t, index, contrast_idx)
        got.backward()
        want.backward()
        assert got.item() == pytest.approx(want.item(), rel=1e-10)
        assert torch.allclose(f_s.grad, f_s_crd.grad, rtol=1e-9, atol=1e-13)
        pairs = ((method.embed_s, crd.embed_s, w_s, sigma_s), (method.embed_t, crd.embed_t, w_t, sigma_t))
        for head, ref, w, sigma in pairs:
            # d L(W / s(W)) / dW with s = u^T W v: G / s - <G, W> / s^2 * u v^T, (u, v) the top singular pair.
            g = ref.linear.weight.grad
            u, _, vh = torch.linalg.svd(w)
            chain = g / sigma - (g * w).sum() / sigma**2 * torch.outer(u[:, 0], vh[0])
            assert torch.allclose(head.linear.parametrizations.weight.original.grad, chain, rtol=1e-8, atol=1e-12)
            assert torch.allclose(head.linear.bias.grad, ref.linear.bias.grad, rtol=1e-9, atol=1e-13)
        assert torch.allclose(method.memory.student.bank, crd.memory.student.bank, rtol=1e-12, atol=1e-15)
        assert method.memory.teacher.z.item() == pytest.approx(crd.memory.teacher.z.item(), rel=1e-12)


def test_spectral_normalised_heads_have_spectral_norm_one():
    labels = torch.arange(200) % 10
    torch.manual_seed(0)
    method = WCoRD(feat_dim=32, num_negatives=24)
    method.setup(probe(48), probe(64), labels)
    f_s = pat(8 * 48, 0.3, 0.1).reshape(8, 48).float()
    f_t = pat(8 * 64, 0.5, 0.2).reshape(8, 64).float()
    for step in range(5):
        method(*outputs(f_s, f_t), batch_of(torch.arange(8) + 8 * step, labels), epoch=1)
    for head in (method.embed_s, method.embed_t):
        norm = torch.linalg.matrix_norm(head.linear.weight.detach().double(), ord=2).item()
        assert 1 - 1e-3 < norm <= 1 + 1e-4


def reference_local_loss(v_s: torch.Tensor, v_t: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    cost = 1 - (v_t / v_t.norm(dim=1, keepdim=True)) @ (v_s / v_s.norm(dim=1, keepdim=True)).t()
    return (plain_sinkhorn(cost.detach(), epsilon, iterations) * cost).sum()


def test_local_term_and_its_gradient_equal_an_independent_computation():
    method = wcord(epsilon=0.2, iterations=80)
    v_s = pat(B * D, 0.37, 0.1).reshape(B, D).requires_grad_()
    v_t = pat(B * D, 0.53, 0.2, torch.cos).reshape(B, D).requires_grad_()
    got = method.local_loss(v_s, v_t)
    v_s_ref, v_t_ref = v_s.detach().clone().requires_grad_(), v_t.detach().clone().requires_grad_()
    want = reference_local_loss(v_s_ref, v_t_ref, 0.2, 80)
    got.backward()
    want.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    assert torch.allclose(v_s.grad, v_s_ref.grad, rtol=1e-9, atol=1e-14)
    assert torch.allclose(v_t.grad, v_t_ref.grad, rtol=1e-9, atol=1e-14)


def test_undetached_plan_is_differentiated_through_the_solver():
    v_s = pat(B * D, 0.37, 0.1).reshape(B, D).requires_grad_()
    v_t = pat(B * D, 0.53, 0.2, torch.cos).reshape(B, D)
    for solver, eps in (("sinkhorn", 0.2), ("ipot", 0.5)):
        method = wcord(epsilon=eps, iterations=30, solver=solver, detach_plan=False)
        assert torch.autograd.gradcheck(lambda x, m=method: m.local_loss(x, v_t), (v_s,))
        detached = wcord(epsilon=eps, iterations=30, solver=solver)
        g_full = torch.autograd.grad(method.local_loss(v_s, v_t), v_s)[0]
        g_detached = torch.autograd.grad(detached.local_loss(v_s, v_t), v_s)[0]
        assert not torch.allclose(g_full, g_detached)


def test_gradient_penalty_equals_per_pair_input_gradients():
    method = wcord(lipschitz="gradient_penalty", gp_weight=10.0)
    set_heads(method, *pattern_weights())
    f_s, f_t, _, _ = inputs(1)
    norms = []
    for i in range(B):
        for j in (i, (i + 1) % B):  # joint pair (t_i, s_i), then marginal pair (t_i, s_{i+1})
            x_s, x_t = f_s[j].clone().requires_grad_(), f_t[i].clone().requires_grad_()
            v_s = F.normalize(method.embed_s.linear(x_s[None]), dim=1, eps=0)
            v_t = F.normalize(method.embed_t.linear(x_t[None]), dim=1, eps=0)
            g_s, g_t = torch.autograd.grad((v_s * v_t).sum() / method.temperature, (x_s, x_t))
            norms.append(math.sqrt(g_s.pow(2).sum().item() + g_t.pow(2).sum().item()))
    want = sum((n - 1) ** 2 for n in norms) / len(norms)
    assert method.critic_penalty(f_s, f_t).item() == pytest.approx(want, rel=1e-10)
    terms = method(*outputs(f_s, f_t), batch_of(torch.tensor([3, 11, 0, 17]), torch.arange(N) % 4), epoch=1)
    assert set(terms) == {"gckt", "lckt", "critic_gp"}
    assert terms["critic_gp"].item() == pytest.approx(10.0 * want, rel=1e-10)


@pytest.mark.parametrize("lipschitz", ["spectral", "gradient_penalty", "none"])
@pytest.mark.parametrize("detach_plan", [True, False])
def test_gradients_reach_student_features_and_both_heads_but_not_the_teacher(lipschitz, detach_plan):
    labels = torch.arange(200) % 10
    torch.manual_seed(0)
    method = WCoRD(feat_dim=8, num_negatives=32, lipschitz=lipschitz, detach_plan=detach_plan)
    method.setup(probe(16), probe(12), labels)
    f_s = pat(8 * 16, 0.41, 0.3).reshape(8, 16).float().requires_grad_()
    f_t = pat(8 * 12, 0.29, 0.5).reshape(8, 12).float().requires_grad_()
    terms = method(*outputs(f_s, f_t), batch_of(torch.arange(0, 80, 10), labels), epoch=1)
    for name, term in terms.items():
        assert term.dtype == torch.float32 and torch.isfinite(term), name
    sum(terms.values()).backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert f_t.grad is None
    for name, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # The local term alone also trains both heads.
    method.zero_grad()
    f_s.grad = None
    method.local_loss(*method.embed(f_s, f_t)).backward()
    assert f_s.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())


def test_zero_local_weight_is_the_gckt_only_ablation_and_zero_weights_are_an_error():
    labels = torch.arange(200) % 10
    f_s, f_t = pat(8 * 16, 0.4, 0.3).reshape(8, 16).float(), pat(8 * 16, 0.3, 0.1).reshape(8, 16).float()
    for weights, names in (({"local_weight": 0}, ["gckt"]), ({"global_weight": 0}, ["lckt"])):
        method = WCoRD(feat_dim=8, num_negatives=32, **weights)
        method.setup(probe(16), probe(16), labels)
        assert list(method(*outputs(f_s, f_t), batch_of(torch.arange(8), labels), epoch=1)) == names
    method = WCoRD(feat_dim=8, num_negatives=32, global_weight=0, local_weight=0)
    method.setup(probe(16), probe(16), labels)
    with pytest.raises(ValueError, match="weight"):
        method(*outputs(f_s, f_t), batch_of(torch.arange(8), labels), epoch=1)


def test_half_precision_features_give_float32_terms():
    labels = torch.arange(200) % 10
    method = WCoRD(feat_dim=8, num_negatives=32)
    method.setup(probe(16), probe(16), labels)
    f_s, f_t = pat(8 * 16, 0.4, 0.3).reshape(8, 16), pat(8 * 16, 0.3, 0.1).reshape(8, 16)
    terms = method(*outputs(f_s.bfloat16(), f_t.bfloat16()), batch_of(torch.arange(8), labels), epoch=1)
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for t in terms.values())


def run_epoch(method: WCoRD, labels: torch.Tensor, epoch: int) -> list[float]:
    losses = []
    for step in range(3):
        f_s = pat(8 * 16, 0.37 + 0.1 * step + epoch, 0.1).reshape(8, 16).float()
        f_t = pat(8 * 16, 0.53 + 0.1 * step, 0.2 * epoch, torch.cos).reshape(8, 16).float()
        index = (torch.arange(8) * 7 + 3 * step + epoch) % len(labels)
        terms = method(*outputs(f_s, f_t), batch_of(index, labels), epoch=epoch)
        losses.append(sum(terms.values()).item())
    return losses


def test_z_is_frozen_after_the_first_batch_and_the_state_dict_resumes_exactly():
    labels = torch.arange(120) % 6
    torch.manual_seed(0)
    method = WCoRD(feat_dim=8, num_negatives=24)
    method.setup(probe(16), probe(16), labels)
    assert method.memory.student.z.item() < 0 and method.memory.teacher.z.item() < 0
    run_epoch(method, labels, epoch=1)
    z = (method.memory.student.z.item(), method.memory.teacher.z.item())
    assert min(z) > 0
    state = {k: v.clone() for k, v in method.state_dict().items()}
    assert {"memory.student.bank", "memory.student.z", "memory.teacher.bank", "memory.teacher.z", "sampler.seed",
            "embed_s.linear.parametrizations.weight.original", "embed_s.linear.parametrizations.weight.0._u",
            "embed_t.linear.parametrizations.weight.original", "embed_t.linear.parametrizations.weight.0._v",
            "embed_s.linear.bias", "embed_t.linear.bias"} <= set(state)
    want = run_epoch(method, labels, epoch=2)
    assert (method.memory.student.z.item(), method.memory.teacher.z.item()) == z

    torch.manual_seed(1)
    resumed = WCoRD(feat_dim=8, num_negatives=24)
    resumed.setup(probe(16), probe(16), labels)
    resumed.load_state_dict(state)
    assert run_epoch(resumed, labels, epoch=2) == want
    for name, value in method.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_forward_before_setup_and_bad_knobs_are_clear_errors():
    with pytest.raises(RuntimeError, match="setup"):
        WCoRD()(probe(4), probe(4), batch_of(torch.arange(2), torch.arange(4)), epoch=1)
    for knob in ({"lipschitz": "clip"}, {"solver": "emd"}, {"cost": "l1"}, {"mode": "queue"}):
        with pytest.raises(ValueError, match=next(iter(knob))):
            WCoRD(**knob)
    with pytest.raises(ValueError, match="epsilon"):
        WCoRD(epsilon=0)
    with pytest.raises(ValueError, match="num_negatives"):
        WCoRD(num_negatives=256).setup(probe(8), probe(8), torch.arange(256) % 100)


def test_heads_are_sized_from_the_probes_like_crd():
    method = WCoRD()
    method.setup(probe(256), probe(256), torch.arange(50_000) % 100)
    assert method.extra_parameter_count() == 65_792  # CRD's heads (methods.md §7), spectral norm adds no parameter
    assert method.memory.student.bank.shape == (50_000, 128)


def test_configs_carry_the_knobs_and_the_published_number(tmp_path):
    cfg = compose_config(["experiment=wcord_resnet32x4_8x4"], run_dir=tmp_path)
    assert cfg.distiller.ce_weight == 1.0 and cfg.trainer.epochs == 240
    method = cfg.distiller.method
    assert method._target_ == "distillbench.distillers.wcord.WCoRD"
    assert (method.global_weight, method.local_weight, method.feat_dim, method.num_negatives) == (0.8, 1.0, 128, 16384)
    assert (method.temperature, method.momentum, method.mode, method.lipschitz) == (0.07, 0.5, "exact", "spectral")
    assert (method.cost, method.solver, method.epsilon, method.iterations, method.detach_plan) == (
        "cosine", "sinkhorn", 0.05, 50, True)
    assert cfg.published.acc1 == 76.15 and cfg.published.paper == "wcord"
    defaults = WCoRD()
    for key, value in method.items():
        if key != "_target_":
            assert getattr(defaults, key) == value, key

    both = compose_config(["distiller=wcord_kd"], run_dir=tmp_path)
    assert both.distiller.ce_weight == 1.0
    assert both.distiller.method.kd.weight == 1.0 and both.distiller.method.kd.temperature == 4.0
    assert dict(both.distiller.method.wcord) == dict(method)
    combined = instantiate(both.distiller.method)
    labels = torch.arange(200) % 10
    student = ModelOutput(pat(8 * 10, 0.3, 0.1).reshape(8, 10).float(), [pat(8 * 16, 0.4, 0.3).reshape(8, 16).float()])
    teacher = ModelOutput(pat(8 * 10, 0.5, 0.2).reshape(8, 10).float(), [pat(8 * 16, 0.3, 0.1).reshape(8, 16).float()])
    combined.parts["wcord"].num_negatives = 32
    combined.setup(student, teacher, labels)
    assert set(combined(student, teacher, batch_of(torch.arange(8), labels), epoch=1)) == {"kd", "gckt", "lckt"}
