"""The contrastive memory and the class-aware sampler against RepDistiller's semantics (commit b84f547).

``MemoryBank``/``ContrastMemory`` follow ``crd/memory.py::ContrastMemory`` (uniform init,
Z from the first batch then frozen, momentum update with renormalisation after scoring);
``ClassAwareSampler`` draws with the statistics of ``dataset/cifar100.py::CIFAR100InstanceSample``
(exact/relax positives, K negatives uniform over the other classes' samples, without
replacement unless a class has fewer than K of them). The statistical checks use fixed seeds,
so they are deterministic; their bounds are six standard deviations wide.
"""

from __future__ import annotations

import math

import pytest
import torch

from distillbench.distillers.memory import ClassAwareSampler, ContrastMemory, MemoryBank

# Four classes of unequal size, interleaved so that the class-sorted order is not the identity.
CLASS_SIZES = (10, 20, 15, 15)
N = sum(CLASS_SIZES)


def uneven_labels() -> torch.Tensor:
    by_class = torch.repeat_interleave(torch.arange(len(CLASS_SIZES)), torch.tensor(CLASS_SIZES))
    return by_class[(7 * torch.arange(N)) % N]


def anchors_of_class(labels: torch.Tensor, c: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    members = torch.nonzero(labels == c).flatten()
    index = members[torch.arange(rows) % len(members)]
    return index, labels[index]


def pattern(*shape: int, a: float = 0.37, c: float = 0.0) -> torch.Tensor:
    n = math.prod(shape)
    return torch.sin(a * torch.arange(n, dtype=torch.float64) + c).reshape(shape)


def sampler(labels: torch.Tensor, k: int, mode: str = "exact", seed: int = 0) -> ClassAwareSampler:
    torch.manual_seed(seed)
    return ClassAwareSampler(labels, k, mode)


def inclusion_statistic(counts: torch.Tensor, rows: int, k: int) -> float:
    """Chi-square-type statistic of inclusion counts of uniform K-subsets of M items, ~ chi2(M - 1)."""
    m = counts.numel()
    p = k / m
    expected = rows * p
    return float(((counts - expected) ** 2).sum() / (rows * p * (1 - p)) * (m - 1) / m)


def multinomial_statistic(counts: torch.Tensor) -> float:
    """Pearson's statistic for uniform categorical counts, ~ chi2(M - 1)."""
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def bound(df: int) -> float:
    return df + 6 * math.sqrt(2 * df)


# ----------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("c", range(len(CLASS_SIZES)))
def test_exact_negatives_are_distinct_other_class_and_uniform(c):
    labels, k, rows = uneven_labels(), 20, 3000
    index, anchor_labels = anchors_of_class(labels, c, rows)
    idx = sampler(labels, k).draw(index, anchor_labels, epoch=1)
    assert idx.shape == (rows, k + 1) and idx.dtype == torch.long
    assert torch.equal(idx[:, 0], index)
    negatives = idx[:, 1:]
    assert not (labels[negatives] == c).any()
    assert (negatives.sort(dim=1).values.diff(dim=1) > 0).all()
    others = torch.nonzero(labels != c).flatten()
    counts = torch.bincount(negatives.flatten(), minlength=N)[others].double()
    assert torch.bincount(negatives.flatten(), minlength=N)[labels == c].sum() == 0
    assert inclusion_statistic(counts, rows, k) < bound(len(others) - 1)


def test_the_uniformity_check_detects_a_sample_that_is_never_drawn():
    labels, k, rows = uneven_labels(), 20, 3000
    index, anchor_labels = anchors_of_class(labels, 0, rows)
    negatives = sampler(labels, k).draw(index, anchor_labels, epoch=1)[:, 1:]
    counts = torch.bincount(negatives.flatten(), minlength=N)[labels != 0].double()
    counts[1] += counts[0]
    counts[0] = 0
    assert inclusion_statistic(counts, rows, k) > bound(counts.numel() - 1)


@pytest.mark.parametrize("c", range(len(CLASS_SIZES)))
def test_relax_positives_are_uniform_over_the_class_and_negatives_unchanged(c):
    labels, k, rows = uneven_labels(), 20, 4000
    index, anchor_labels = anchors_of_class(labels, c, rows)
    idx = sampler(labels, k, mode="relax").draw(index, anchor_labels, epoch=1)
    positives = idx[:, 0]
    assert (labels[positives] == c).all()
    assert (positives == index).any() and (positives != index).any()
    members = torch.nonzero(labels == c).flatten()
    counts = torch.bincount(positives, minlength=N)[members].double()
    assert multinomial_statistic(counts) < bound(len(members) - 1)
    negatives = idx[:, 1:]
    assert not (labels[negatives] == c).any()
    assert (negatives.sort(dim=1).values.diff(dim=1) > 0).all()


def test_classes_with_fewer_than_k_negatives_draw_with_replacement():
    # K = 45: class 1 has 40 negatives (with replacement), classes 2 and 3 exactly 45 (all of
    # them, once each), class 0 has 50 (a subset without replacement). One mixed batch.
    labels, k, rows = uneven_labels(), 45, 4000
    parts = [anchors_of_class(labels, c, rows) for c in range(len(CLASS_SIZES))]
    index = torch.cat([p[0] for p in parts])
    anchor_labels = torch.cat([p[1] for p in parts])
    s = sampler(labels, k)
    assert s.may_replace
    idx = s.draw(index, anchor_labels, epoch=1)
    negatives = idx[:, 1:]
    assert not (labels[negatives] == anchor_labels[:, None]).any()
    distinct = negatives.sort(dim=1).values.diff(dim=1) > 0
    rows_of = {c: anchor_labels == c for c in range(len(CLASS_SIZES))}
    assert distinct[rows_of[0]].all() and distinct[rows_of[2]].all() and distinct[rows_of[3]].all()
    assert not distinct[rows_of[1]].all(dim=1).any()
    others = torch.nonzero(labels != 2).flatten()
    assert torch.equal(negatives[rows_of[2]].sort(dim=1).values, others.expand(rows, -1))
    counts = torch.bincount(negatives[rows_of[1]].flatten(), minlength=N)[labels != 1].double()
    assert multinomial_statistic(counts) < bound(counts.numel() - 1)


def test_without_a_short_class_the_replacement_path_is_off():
    assert not sampler(uneven_labels(), 40).may_replace


@pytest.mark.parametrize("k", [N, N + 5])
def test_k_not_below_the_number_of_samples_is_a_clear_error(k):
    with pytest.raises(ValueError, match="num_negatives"):
        ClassAwareSampler(uneven_labels(), k)


def test_a_single_class_has_no_negatives():
    with pytest.raises(ValueError, match="two classes"):
        ClassAwareSampler(torch.zeros(10, dtype=torch.long), 3)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        ClassAwareSampler(uneven_labels(), 3, mode="queue")


def test_draws_are_reproducible_per_seed_and_epoch():
    labels = uneven_labels()
    index = torch.arange(0, N, 4)
    a, b = sampler(labels, 8, seed=1), sampler(labels, 8, seed=1)
    first = a.draw(index, labels[index], epoch=1)
    assert torch.equal(first, b.draw(index, labels[index], epoch=1))
    assert not torch.equal(first, a.draw(index, labels[index], epoch=1))  # the stream runs on within an epoch
    assert not torch.equal(first, a.draw(index, labels[index], epoch=2))
    assert not torch.equal(first, sampler(labels, 8, seed=2).draw(index, labels[index], epoch=1))


def test_loading_the_state_dict_resumes_the_draws_exactly():
    labels = uneven_labels()
    index = torch.arange(1, N, 3)
    a = sampler(labels, 8, mode="relax", seed=3)
    a.draw(index, labels[index], epoch=1)
    a.draw(index, labels[index], epoch=1)
    saved = {k: v.clone() for k, v in a.state_dict().items()}
    assert set(saved) == {"seed", "generator_epoch", "generator_state"}
    want = [a.draw(index, labels[index], epoch=2), a.draw(index, labels[index], epoch=2)]
    b = sampler(labels, 8, mode="relax", seed=4)
    b.draw(index, labels[index], epoch=2)
    b.load_state_dict(saved)
    assert torch.equal(b.draw(index, labels[index], epoch=2), want[0])
    assert torch.equal(b.draw(index, labels[index], epoch=2), want[1])


def test_a_mid_epoch_state_dict_continues_the_stream_of_that_epoch():
    labels = uneven_labels()
    index = torch.arange(0, N, 5)
    a = sampler(labels, 8, seed=5)
    a.draw(index, labels[index], epoch=3)
    saved = {k: v.clone() for k, v in a.state_dict().items()}  # after one step of epoch 3
    want = [a.draw(index, labels[index], epoch=3), a.draw(index, labels[index], epoch=4)]
    b = sampler(labels, 8, seed=6)
    b.load_state_dict(saved)
    assert torch.equal(b.draw(index, labels[index], epoch=3), want[0])
    assert torch.equal(b.draw(index, labels[index], epoch=4), want[1])


@pytest.mark.cuda
def test_draws_happen_on_the_device_of_the_sampler():
    labels = uneven_labels()
    s = sampler(labels, 8).cuda()
    idx = s.draw(torch.arange(4), labels[:4], epoch=1)
    assert idx.device.type == "cuda"
    assert not (s.labels[idx[:, 1:]] == labels[:4].cuda()[:, None]).any()


# ----------------------------------------------------------------------------- memory


def test_bank_init_is_uniform_unnormalised_with_unit_expected_norm():
    torch.manual_seed(0)
    bank = MemoryBank(4000, 128)
    a = 1 / math.sqrt(128 / 3)
    assert bank.bank.shape == (4000, 128) and bank.bank.dtype == torch.float32
    assert bank.bank.abs().max() <= a and bank.bank.abs().max() > 0.99 * a
    squared_norms = bank.bank.pow(2).sum(1)
    assert squared_norms.mean().item() == pytest.approx(1.0, abs=0.01)
    assert squared_norms.std().item() > 0.03  # not normalised
    assert bank.z.item() == -1.0
    assert set(bank.state_dict()) == {"bank", "z"} and not list(bank.parameters())


def test_normalized_init_gives_unit_rows():
    torch.manual_seed(0)
    bank = MemoryBank(50, 16, normalized_init=True)
    assert torch.allclose(bank.bank.norm(dim=1), torch.ones(50))


def gathered_similarities(bank: torch.Tensor, anchor: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """RepDistiller's form: gather B x (K+1) x d rows, then a batched product with the anchor."""
    rows = bank.index_select(0, idx.flatten()).view(*idx.shape, bank.shape[1])
    return torch.bmm(rows, anchor[:, :, None]).squeeze(2)


def double_bank(n: int = 30, d: int = 6) -> MemoryBank:
    bank = MemoryBank(n, d).double()
    bank.bank.copy_(0.5 * pattern(n, d, a=0.29, c=0.7))
    return bank


def test_full_bank_product_with_gather_equals_the_gathered_form_and_its_gradient():
    bank = double_bank()
    idx = (7 * torch.arange(5)[:, None] + 3 * torch.arange(9)[None, :]) % 30
    a1 = pattern(5, 6, a=0.53, c=0.2).requires_grad_()
    a2 = a1.detach().clone().requires_grad_()
    ours = bank.similarities(a1, idx)
    ref = gathered_similarities(bank.bank, a2, idx)
    assert torch.allclose(ours, ref, rtol=1e-13, atol=1e-15)
    weights = pattern(5, 9, a=0.91, c=0.4)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.allclose(a1.grad, a2.grad, rtol=1e-13, atol=1e-15)


def test_z_is_estimated_on_the_first_call_then_frozen():
    bank = double_bank()
    idx = (torch.arange(4)[:, None] + 5 * torch.arange(7)[None, :]) % 30
    anchor = pattern(4, 6, a=0.61, c=0.1)
    exp_scores = torch.exp(gathered_similarities(bank.bank, anchor, idx) / 0.07)
    first = bank.score(anchor, idx, 0.07)
    z = exp_scores.mean().item() * 30
    assert bank.z.item() == pytest.approx(z, rel=1e-12)
    assert torch.allclose(first, exp_scores / z, rtol=1e-12)
    second = bank.score(2 * anchor, idx, 0.07)
    assert bank.z.item() == pytest.approx(z, rel=1e-12)
    assert torch.allclose(second, torch.exp(gathered_similarities(bank.bank, 2 * anchor, idx) / 0.07) / z, rtol=1e-12)


def test_update_moves_rows_with_momentum_and_renormalises_without_eps():
    bank = double_bank()
    before = bank.bank.clone()
    index = torch.tensor([4, 0, 17])
    values = pattern(3, 6, a=0.77, c=0.3)
    bank.update(index, values)
    mixed = 0.5 * before[index] + 0.5 * values
    assert torch.allclose(bank.bank[index], mixed / mixed.pow(2).sum(1, keepdim=True).sqrt(), rtol=1e-14)
    assert torch.allclose(bank.bank[index].norm(dim=1), torch.ones(3, dtype=torch.float64), rtol=1e-14)
    untouched = torch.ones(30, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(bank.bank[untouched], before[untouched])


def test_contrast_memory_scores_with_the_initial_banks_then_updates_with_the_index():
    memory = ContrastMemory(30, 6).double()
    memory.student.bank.copy_(0.5 * pattern(30, 6, a=0.29, c=0.7))
    memory.teacher.bank.copy_(0.5 * pattern(30, 6, a=0.43, c=0.9))
    student_before, teacher_before = memory.student.bank.clone(), memory.teacher.bank.clone()
    index = torch.tensor([2, 9, 21])
    idx = torch.cat([torch.tensor([[5], [9], [20]]), (index[:, None] + 1 + 2 * torch.arange(4)) % 30], 1)
    v_s = pattern(3, 6, a=0.67, c=0.5)
    v_t = pattern(3, 6, a=0.83, c=0.1)
    v_s, v_t = (v / v.norm(dim=1, keepdim=True) for v in (v_s, v_t))
    v_s.requires_grad_()
    p_s, p_t = memory(v_s, v_t, index, idx)
    e_s = torch.exp(gathered_similarities(teacher_before, v_s.detach(), idx) / 0.07)
    e_t = torch.exp(gathered_similarities(student_before, v_t, idx) / 0.07)
    assert torch.allclose(p_s, e_s / (e_s.mean() * 30), rtol=1e-12)
    assert torch.allclose(p_t, e_t / (e_t.mean() * 30), rtol=1e-12)
    # Rows of the dataset indices moved; the relaxed positives 5 and 20 did not.
    assert not torch.equal(memory.student.bank[index], student_before[index])
    assert not torch.equal(memory.teacher.bank[index], teacher_before[index])
    for row in (5, 20):
        assert torch.equal(memory.student.bank[row], student_before[row])
        assert torch.equal(memory.teacher.bank[row], teacher_before[row])
    # The gradient is taken with the bank as scored, although the update overwrote it.
    p_s.sum().backward()
    anchor = v_s.detach().clone().requires_grad_()
    e = torch.exp(gathered_similarities(teacher_before, anchor, idx) / 0.07)
    (e / memory.teacher.z).sum().backward()
    assert torch.allclose(v_s.grad, anchor.grad, rtol=1e-12)


def test_banks_and_z_live_in_the_state_dict_and_are_restored():
    torch.manual_seed(0)
    memory = ContrastMemory(30, 6)
    idx = torch.arange(12).reshape(3, 4)
    v = torch.nn.functional.normalize(pattern(3, 6).float(), dim=1)
    memory(v, v, torch.tensor([0, 4, 8]), idx)
    state = memory.state_dict()
    assert set(state) == {"student.bank", "student.z", "teacher.bank", "teacher.z"}
    torch.manual_seed(1)
    fresh = ContrastMemory(30, 6)
    fresh.load_state_dict(state)
    for name, value in memory.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value)
    assert fresh.student.z.item() > 0 and fresh.teacher.z.item() > 0
