"""Memory banks of per-sample embeddings and the class-aware negative sampler of CRD.

CRD keeps one embedding per training image for the student and one for the teacher. Each
batch is scored against K sampled rows of the *other* network's bank, the scores are
normalised by a constant Z estimated once, and only then are the batch's own rows moved
towards the new embeddings. CRCD, WCoRD and RRD's momentum variant reuse these pieces:
``MemoryBank`` (one bank, its Z, the momentum update), ``ContrastMemory`` (the
student/teacher pair scored both ways) and ``ClassAwareSampler`` (which rows are compared).

Sampling belongs to the method, not to the dataset: the sampler holds the training labels
and draws the contrast indices of a batch on the bank's device from the batch's dataset
indices and labels.

Reproducibility and resume: the sampler's seed is drawn from torch's global RNG when it is
built (in the distiller's ``setup``, after the trainer has seeded everything) and is kept in
the state_dict. At the first draw of every epoch its private generator is reseeded from
``(seed, epoch)``, and runs freely within the epoch. The state_dict also carries the
generator's position, so a run resumed from a mid-epoch checkpoint draws exactly the
negatives the uninterrupted run drew.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

from distillbench.errors import ConfigError
from distillbench.runtime import distributed
from distillbench.runtime.seeding import epoch_seed

GENERATOR_EPOCH = "generator_epoch"
GENERATOR_STATE = "generator_state"

log = logging.getLogger(__name__)

SAMPLING_MODES = ("exact", "relax")
# Marks a normalisation constant that has not been estimated yet (Z is always positive).
Z_UNSET = -1.0


class MemoryBank(nn.Module):
    """``num_samples x dim`` embeddings, one row per training sample, plus their constant Z.

    Rows start i.i.d. Uniform(-a, a) with a = 1/sqrt(dim/3): unnormalised, with expected
    squared norm exactly 1 (``normalized_init`` row-normalises them, as CRCD does). Both the
    bank and Z are buffers, so they travel with ``.to()`` and live in checkpoints.
    """

    def __init__(self, num_samples: int, dim: int, momentum: float = 0.5, normalized_init: bool = False):
        super().__init__()
        if num_samples < 1 or dim < 1:
            raise ConfigError(f"A memory bank needs at least one row and one column, got {num_samples} x {dim}.")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must lie in [0, 1), got {momentum}.")
        self.momentum = momentum
        bound = 1.0 / math.sqrt(dim / 3)
        bank = torch.rand(num_samples, dim).mul_(2 * bound).sub_(bound)
        if normalized_init:
            bank = bank / bank.pow(2).sum(1, keepdim=True).sqrt()
        self.register_buffer("bank", bank)
        self.register_buffer("z", torch.tensor(Z_UNSET))
        # With deferred updates (the trainer's steps) the rows written in a forward are applied after the
        # optimiser step, so the bank the backward reads is never overwritten in place before it: no
        # per-step snapshot of the bank, and one compiled program for the whole step stays exact.
        self.defer_updates = False
        self._pending: list[tuple[Tensor, Tensor]] = []

    @property
    def num_samples(self) -> int:
        return self.bank.shape[0]

    def similarities(self, anchor: Tensor, contrast_idx: Tensor) -> Tensor:
        """``anchor[b] . bank[contrast_idx[b, j]]`` as a ``B x (K+1)`` tensor, in the bank's precision.

        One ``B x N`` product against the whole bank and a gather of the sampled columns:
        the same numbers as gathering ``B x (K+1) x dim`` rows first, without materialising
        them (0.5 GB per step at K = 16384). The bank gets no gradient, but the anchor's
        gradient needs the bank as it was when scored; since ``update`` overwrites rows in
        place afterwards, the product keeps a snapshot (one ``N x dim`` copy) when autograd
        records it.
        """
        bank = self.bank
        if anchor.requires_grad and torch.is_grad_enabled() and not self.defer_updates:
            bank = bank.clone()
        with torch.autocast(device_type=anchor.device.type, enabled=False):
            scores = anchor.to(bank.dtype) @ bank.t()
        return scores.gather(1, contrast_idx)

    def normalize(self, exp_scores: Tensor) -> Tensor:
        """Divide by Z, estimating it on the first call as mean(exp_scores) * N and freezing it.

        The mean runs over every entry of that first batch, positives included (of the global
        batch, on several ranks). Branch-free, so it never synchronises with the device.
        """
        with torch.no_grad():
            if distributed.is_distributed():
                scores = exp_scores.detach().double()
                sums = torch.stack([scores.sum(), scores.new_tensor(scores.numel())])
                total, count = distributed.all_reduce_sum(sums)
                mean = total / count
            else:
                mean = exp_scores.detach().mean()
            estimate = mean.to(self.z.dtype) * self.num_samples
            self.z.copy_(torch.where(self.z < 0, estimate, self.z))
        return exp_scores / self.z

    def score(self, anchor: Tensor, contrast_idx: Tensor, temperature: float) -> Tensor:
        """exp(anchor . row / temperature) / Z for the rows ``contrast_idx``: CRD's P(i | anchor)."""
        return self.normalize(torch.exp(self.similarities(anchor, contrast_idx) / temperature))

    @torch.no_grad()
    def update(self, index: Tensor, values: Tensor) -> None:
        """rows[index] <- L2-normalise(momentum * rows[index] + (1 - momentum) * values), no eps.

        On several ranks the whole global batch is applied, so every rank keeps the same bank.
        With ``defer_updates`` the rows wait for ``apply_pending_updates`` (after the step).
        """
        if self.defer_updates:
            self._pending.append((index, values.detach()))
            return
        counts = distributed.row_counts(index.shape[0], index.device)
        index, values = distributed.gather_rows(index, counts), distributed.gather_rows(values, counts)
        rows = self.bank.index_select(0, index) * self.momentum + values.detach().to(self.bank.dtype) * (
            1 - self.momentum
        )
        self.bank.index_copy_(0, index, rows / rows.pow(2).sum(1, keepdim=True).sqrt())

    def apply_pending_updates(self) -> None:
        pending, self._pending, self.defer_updates = self._pending, [], False
        try:
            for index, values in pending:
                self.update(index, values)
        finally:
            self.defer_updates = True


class ContrastMemory(nn.Module):
    """A student bank and a teacher bank, each scored with the other network's embedding.

    ``forward`` returns (student-anchored, teacher-anchored) probabilities, both computed with
    the banks as they were before the call; the rows of the batch's dataset indices are
    updated afterwards (with ``index``, never with a relaxed positive).
    """

    def __init__(self, num_samples: int, dim: int, temperature: float = 0.07, momentum: float = 0.5):
        super().__init__()
        self.temperature = temperature
        self.student = MemoryBank(num_samples, dim, momentum)
        self.teacher = MemoryBank(num_samples, dim, momentum)

    @property
    def num_samples(self) -> int:
        return self.student.num_samples

    def forward(self, student: Tensor, teacher: Tensor, index: Tensor, contrast_idx: Tensor) -> tuple[Tensor, Tensor]:
        student_anchored = self.teacher.score(student, contrast_idx, self.temperature)
        teacher_anchored = self.student.score(teacher, contrast_idx, self.temperature)
        self.student.update(index, student)
        self.teacher.update(index, teacher)
        return student_anchored, teacher_anchored


class ClassAwareSampler(nn.Module):
    """Contrast indices ``[positive, negative_1..negative_K]`` for each sample of a batch.

    Positive: the sample itself (``exact``) or a uniformly random sample of its class, possibly
    itself (``relax``). Negatives: K samples drawn uniformly without replacement from all
    samples of the other classes, with replacement for a class that has fewer than K of them.
    These are the statistics of RepDistiller's ``CIFAR100InstanceSample``; the draws are
    vectorised on the labels' device with a generator of its own (see the module docstring).
    """

    def __init__(self, labels: Tensor, num_negatives: int, mode: str = "exact"):
        super().__init__()
        if mode not in SAMPLING_MODES:
            raise ConfigError(f"mode must be one of {SAMPLING_MODES}, got {mode!r}.")
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        num_samples = labels.numel()
        if num_negatives < 1:
            raise ConfigError(f"num_negatives must be positive, got {num_negatives}.")
        if num_negatives >= num_samples:
            raise ConfigError(
                f"num_negatives = {num_negatives} must be smaller than the number of training samples "
                f"({num_samples}): the memory has one row per sample. Lower the distiller's num_negatives "
                "(distiller.method.num_negatives, or distiller.method.<part>.num_negatives in a combined config)."
            )
        if labels.min() < 0:
            raise ConfigError("Training labels must be non-negative class indices.")
        counts = torch.bincount(labels)
        available = num_samples - counts[counts > 0]
        if int(available.min()) == 0:
            raise ConfigError("Class-aware negatives need at least two classes in the training set.")
        self.mode = mode
        self.num_negatives = num_negatives
        # A class with fewer than K negatives gets them with replacement, as the reference does.
        self.may_replace = bool(available.min() < num_negatives)
        if self.may_replace:
            log.warning(
                "num_negatives = %d exceeds the %d negatives of the smallest class; such classes draw their "
                "negatives with replacement.", num_negatives, int(available.min()),
            )
        self.register_buffer("labels", labels, persistent=False)
        self.register_buffer("order", torch.argsort(labels, stable=True), persistent=False)
        self.register_buffer("class_count", counts, persistent=False)
        self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("seed", torch.randint(0, 2**62, ()))
        self._generator: torch.Generator | None = None
        self._generator_epoch: int | None = None
        self._saved_position: tuple[int, Tensor] | None = None

    @property
    def num_samples(self) -> int:
        return self.labels.numel()

    def _generator_for(self, epoch: int) -> torch.Generator:
        device = self.labels.device
        if self._generator is None or self._generator.device != device or self._generator_epoch != epoch:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(epoch_seed(int(self.seed), epoch))
            self._generator_epoch = epoch
            if self._saved_position is not None and self._saved_position[0] == epoch:
                self._generator.set_state(self._saved_position[1])
            self._saved_position = None
        return self._generator

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._generator is not None:
            destination[prefix + GENERATOR_EPOCH] = torch.tensor(self._generator_epoch)
            destination[prefix + GENERATOR_STATE] = self._generator.get_state()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        epoch = state_dict.pop(prefix + GENERATOR_EPOCH, None)
        position = state_dict.pop(prefix + GENERATOR_STATE, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._generator = None
        # Applied at the next draw of that epoch, on whatever device the sampler lives on by then.
        self._saved_position = (int(epoch), position) if position is not None else None

    def draw(self, index: Tensor, labels: Tensor, epoch: int) -> Tensor:
        """``B x (K+1)`` int64 dataset indices; column 0 is the positive.

        On several ranks the draw is made for the global batch, identically on every rank (same
        seed, same generator position), and each rank keeps its own rows: the negatives of a
        single-process run, and a generator state any rank's checkpoint can restore.
        """
        if distributed.is_distributed():
            counts = distributed.row_counts(index.shape[0], index.device)
            rows = self._draw(distributed.gather_rows(index, counts), distributed.gather_rows(labels, counts), epoch)
            return rows[distributed.own_slice(counts)]
        return self._draw(index, labels, epoch)

    def _draw(self, index: Tensor, labels: Tensor, epoch: int) -> Tensor:
        generator = self._generator_for(epoch)
        device = self.labels.device
        index = index.to(device)
        labels = labels.to(device)
        batch, n, k = labels.numel(), self.num_samples, self.num_negatives
        count = self.class_count[labels]
        start = self.class_start[labels]

        # The K smallest of N random keys, the anchor's class pushed to +inf: a uniform
        # K-subset of the other classes' samples.
        keys = torch.rand((batch, n), generator=generator, device=device, dtype=torch.float64)
        keys.masked_fill_(self.labels[None, :] == labels[:, None], math.inf)
        negatives = keys.topk(k, dim=1, largest=False, sorted=False).indices
        if self.may_replace:
            available = n - count
            u = torch.rand((batch, k), generator=generator, device=device, dtype=torch.float64)
            slot = (u * available[:, None]).long().minimum(available[:, None] - 1)
            # Slots [0, available) of the class-sorted order with the anchor's class cut out.
            slot = slot + (slot >= start[:, None]).long() * count[:, None]
            negatives = torch.where((available < k)[:, None], self.order[slot], negatives)

        if self.mode == "exact":
            positive = index
        else:
            u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
            positive = self.order[start + (u * count).long().minimum(count - 1)]
        return torch.cat([positive[:, None], negatives], dim=1)


def build_contrast_memory(train_labels: Tensor, feat_dim: int, num_negatives: int, temperature: float,
                          momentum: float, mode: str) -> tuple[ContrastMemory, ClassAwareSampler]:
    """CRD's banks and class-aware sampler, built in the reference's order (banks, then the sampler's seed)
    so that methods sharing them start from the same random state under one seed."""
    memory = ContrastMemory(len(train_labels), feat_dim, temperature, momentum)
    return memory, ClassAwareSampler(train_labels, num_negatives, mode)
