"""Complementary relation contrastive distillation (Zhu et al., AAAI 2021), as in the CRCD repo.

CRCD contrasts *relations* instead of embeddings. The anchors of a batch are the memory rows of
its own samples: for sample b and anchor a, the student's relation ``v_s[b] - anchor[a]`` must
pick out the teacher's relation ``bank_t[b] - anchor[a]`` among the relations of K class-aware
negatives, with CRD's NCE objective over all B² (sample, anchor) pairs, in both directions. A
"gradient element" adds the misalignment of d CE / d pooled feature between the two networks,
multiplied by the KD loss. KD and the relation term stop after ``distill_fraction`` (24/25) of the
run's training iterations (epoch 241 of 250 on CIFAR-100); the reference leaves the gradient element
on until the end.

Memory cost: each direction materialises the B² x (K+1) x d relations of the bank rows, in
float32 (64² x 501 x 128 x 4 bytes = 1.05 GB at batch 64 and the defaults), and keeps them until
the backward pass; the student- and teacher-anchored directions hold about 2.1 GB, twice that with
``grad_type='crcd'``. This is inherent to the method and the reason its K is 500, not 16384.
"""

from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.distillers.crd import nce_loss
from distillbench.distillers.kd import kd_loss
from distillbench.distillers.memory import SAMPLING_MODES, ClassAwareSampler, MemoryBank
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput

EMBED_TYPES = ("linear", "nonlinear", "nofc")
GRAD_TYPES = ("mse", "crcd", "none")
TEACHER_MODES = ("train", "eval")
# Added to every difference vector before normalisation, so a zero relation (an anchor against
# its own bank row) still has a direction.
RELATION_EPS = 1e-6
# F.normalize's default floor on the norm.
NORM_EPS = 1e-12
# The reference scales the gradient-alignment term by 10 before grad_weight.
GRAD_MSE_SCALE = 10.0
# Lechatelia/CRCD @ f9176f6 helper/loops.py:80-81 ('240' schedule): the distillation terms are on while
# cur_iter < total_iter * 24 / 25, with cur_iter = (epoch - 1) * len(train_loader) + idx (loops.py:211).
REFERENCE_DISTILL_FRACTION = 24 / 25


def steps_per_epoch(num_samples: int, batch_size: int, drop_last: bool = False) -> int:
    """Training iterations per epoch of ``num_samples`` in batches of ``batch_size`` (the global batch)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}.")
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


class Embed(nn.Module):
    """Projection head followed by L2 normalisation (no eps).

    ``linear``: one Linear. ``nonlinear``: Linear(in, in)-ReLU-Linear(in, out)-ReLU-Linear(out, out).
    ``nofc``: no projection (``dim_out`` must equal ``dim_in``).
    """

    def __init__(self, dim_in: int, dim_out: int, embed_type: str = "linear"):
        super().__init__()
        if embed_type == "linear":
            self.proj: nn.Module = nn.Linear(dim_in, dim_out)
        elif embed_type == "nonlinear":
            self.proj = nn.Sequential(
                nn.Linear(dim_in, dim_in), nn.ReLU(), nn.Linear(dim_in, dim_out), nn.ReLU(), nn.Linear(dim_out, dim_out)
            )
        elif embed_type == "nofc":
            if dim_in != dim_out:
                raise ConfigError(f"embed_type 'nofc' keeps the feature dimension, got {dim_in} -> {dim_out}.")
            self.proj = nn.Identity()
        else:
            raise ConfigError(f"embed_type must be one of {EMBED_TYPES}, got {embed_type!r}.")

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x.flatten(1))
        return x / x.pow(2).sum(1, keepdim=True).sqrt()


class RelationContrast(nn.Module):
    """Two heads and two row-normalised memory banks scored with relation NCE in both directions.

    Student-anchored: relations of the student embedding to the teacher bank's rows of the batch
    are contrasted with the relations of the teacher bank's contrast rows to the same anchors;
    Z lives on the teacher bank. Teacher-anchored: the mirror image on the student bank. Both are
    scored with the banks as they were before the call; the batch's rows are updated afterwards.
    """

    def __init__(
        self,
        s_dim: int,
        t_dim: int,
        feat_dim: int,
        embed_type: str,
        num_samples: int,
        temperature: float,
        momentum: float,
    ):
        super().__init__()
        self.temperature = temperature
        self.embed_s = Embed(s_dim, feat_dim, embed_type)
        self.embed_t = Embed(t_dim, feat_dim, embed_type)
        self.student = MemoryBank(num_samples, feat_dim, momentum, normalized_init=True)
        self.teacher = MemoryBank(num_samples, feat_dim, momentum, normalized_init=True)

    def probabilities(self, embedding: Tensor, bank: MemoryBank, index: Tensor, contrast_idx: Tensor) -> Tensor:
        """exp(r_bank . r_embedding / tau) / Z for every (sample, anchor) pair: a ``B² x (K+1)`` tensor.

        Row ``b * B + a`` pairs sample b with the anchor ``bank[index[a]]``; column k relates
        ``bank[contrast_idx[b, k]]`` to that anchor. The bank relations need no gradient, so they
        are built and normalised in place: one ``B² x (K+1) x d`` tensor, kept for the backward of
        the product.
        """
        rows = bank.bank
        batch, columns = contrast_idx.shape
        anchors = rows.index_select(0, index)
        contrast = rows.index_select(0, contrast_idx.flatten()).view(batch, columns, -1)
        relation = F.normalize(embedding.to(rows.dtype)[:, None] - anchors[None] + RELATION_EPS, dim=2)
        with torch.no_grad():
            bank_relation = contrast[:, None] - anchors[None, :, None]
            bank_relation.add_(RELATION_EPS)
            bank_relation.div_(torch.linalg.vector_norm(bank_relation, dim=3, keepdim=True).clamp_min_(NORM_EPS))
        scores = (bank_relation @ relation.unsqueeze(-1)).view(batch * batch, columns)
        return bank.normalize(torch.exp(scores / self.temperature))

    def forward(self, f_s: Tensor, f_t: Tensor, index: Tensor, contrast_idx: Tensor) -> Tensor:
        """NCE(student-anchored) + NCE(teacher-anchored), each summed over the B² rows and divided by B²."""
        with torch.autocast(device_type=f_s.device.type, enabled=False):
            v_s = self.embed_s(as_float32(f_s))
            v_t = self.embed_t(as_float32(f_t))
            p_s = self.probabilities(v_s, self.teacher, index, contrast_idx)
            p_t = self.probabilities(v_t, self.student, index, contrast_idx)
            self.student.update(index, v_s)
            self.teacher.update(index, v_t)
            n = self.student.num_samples
            return nce_loss(p_s, n) + nce_loss(p_t, n)


class CRCD(Distiller):
    """``kd_weight * KD + crcd_weight * L_CRCD`` (switched off late in the run) ``+ kd_weight * KD * L_grad``.

    ``L_grad`` compares g = d CE(z, y) / d feat[-1] of the two networks: ``'mse'`` (the reference
    default, despite its name) is 10 (1 - mean_b cos(g_s[b], g_t[b])) and needs equal pooled
    dimensions; ``'crcd'`` is a second, independent relation contrast on (g_s, g_t) with the same
    contrast indices; ``'none'`` drops the term. It enters multiplied by the KD loss and, as in the
    reference, keeps running after the switch unless ``schedule_grad_term`` is set.

    The switch follows the reference's iteration count: with ``T = epochs * steps`` training
    iterations (``steps`` per epoch: ``ceil(N / batch_size)``, or ``floor`` with ``drop_last``, for
    the N training samples ``setup`` is given), iterations ``0 .. ceil(distill_fraction * T) - 1``
    distil and the rest do not. The distiller counts its training forwards in the ``iteration``
    buffer, which checkpoints and resumes with it.

    The teacher's forward must be recorded by autograd for the gradient element
    (``teacher_grad``, on unless ``grad_type='none'``) and, as in the reference, runs in train
    mode (``teacher_mode='train'``: BN batch statistics, running statistics move and are
    checkpointed); ``teacher_mode='eval'`` keeps its BN frozen. The teacher is never optimised.
    """

    teacher_train_mode = True
    teacher_grad = True

    def __init__(
        self,
        kd_weight: float = 0.9,
        kd_temperature: float = 4.0,
        crcd_weight: float = 1.0,
        feat_dim: int = 128,
        embed_type: str = "linear",
        num_negatives: int = 500,
        temperature: float = 0.05,
        momentum: float = 0.5,
        mode: str = "exact",
        grad_type: str = "mse",
        grad_weight: float = 1.0,
        distill_fraction: float = REFERENCE_DISTILL_FRACTION,
        epochs: int = 250,
        batch_size: int = 64,
        drop_last: bool = False,
        schedule_grad_term: bool = False,
        teacher_mode: str = "train",
    ):
        super().__init__()
        for knob, value, choices in (
            ("embed_type", embed_type, EMBED_TYPES),
            ("mode", mode, SAMPLING_MODES),
            ("grad_type", grad_type, GRAD_TYPES),
            ("teacher_mode", teacher_mode, TEACHER_MODES),
        ):
            if value not in choices:
                raise ConfigError(f"{knob} must be one of {choices}, got {value!r}.")
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        self.crcd_weight = crcd_weight
        self.feat_dim = feat_dim
        self.embed_type = embed_type
        self.num_negatives = num_negatives
        self.temperature = temperature
        self.momentum = momentum
        self.mode = mode
        self.grad_type = grad_type
        self.grad_weight = grad_weight
        if not 0 <= distill_fraction <= 1:
            raise ConfigError(f"distill_fraction must lie in [0, 1], got {distill_fraction}.")
        # An exact ratio (24/25 stays 24/25), so the switch lands on the reference's integer iteration.
        self.distill_fraction = Fraction(distill_fraction).limit_denominator(10_000)
        self.epochs = epochs
        self.batch_size = batch_size
        self.drop_last = drop_last
        # Training iterations done so far (checkpointed); the switch is set from the data size in setup().
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.switch_iteration: int | None = None
        self.schedule_grad_term = schedule_grad_term
        self.teacher_train_mode = teacher_mode == "train"
        self.teacher_grad = grad_type != "none"

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        device = student.pooled.device
        s_dim, t_dim = student.pooled.flatten(1).shape[1], teacher.pooled.flatten(1).shape[1]
        if self.grad_type == "mse" and s_dim != t_dim:
            raise ConfigError(
                f"CRCD's grad_type 'mse' compares the cosine of the student's and the teacher's CE gradients "
                f"w.r.t. their pooled features, which needs equal dimensions; got student {s_dim}, teacher {t_dim}. "
                "Use distiller.method.grad_type=crcd or none for this pair."
            )
        if self.embed_type == "nofc" and s_dim != t_dim:
            raise ConfigError(
                f"CRCD's embed_type 'nofc' compares the pooled features directly, which needs equal dimensions; "
                f"got student {s_dim}, teacher {t_dim}."
            )
        feat_dim = s_dim if self.embed_type == "nofc" else self.feat_dim
        n = len(train_labels)
        self.switch_iteration = self.distill_switch_iteration(n)
        # Built in the reference's order (heads, student bank, teacher bank; then the gradient's) from the global RNG.
        self.relation = RelationContrast(s_dim, t_dim, feat_dim, self.embed_type, n, self.temperature, self.momentum)
        if self.grad_type == "crcd":
            self.grad_relation = RelationContrast(
                s_dim, t_dim, feat_dim, self.embed_type, n, self.temperature, self.momentum
            )
        self.sampler = ClassAwareSampler(train_labels, self.num_negatives, self.mode)
        self.to(device)

    def distill_switch_iteration(self, num_samples: int) -> int:
        """The first (0-based) training iteration without KD and the relation term, for ``num_samples``."""
        total = self.epochs * steps_per_epoch(num_samples, self.batch_size, self.drop_last)
        fraction = self.distill_fraction
        # cur_iter < total * fraction  <=>  cur_iter < ceil(total * fraction), in integers.
        return -(-total * fraction.numerator // fraction.denominator)

    def _require_setup(self) -> None:
        if "relation" not in self._modules:
            raise RuntimeError("CRCD.setup() must run before the first forward: it sizes the heads and the memory.")

    def gradient_elements(self, student: ModelOutput, teacher: ModelOutput, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(g_s, g_t): d CE(z, y) / d feat[-1] (batch-mean CE, so both carry a 1/B factor).

        g_s keeps its graph (the loss trains the student through it). g_t is taken without one and
        detached: only the teacher's own parameters lie behind it, and the trainer discards their
        gradients, so the student's and heads' gradients are the same as with the reference's
        ``create_graph=True``, and the teacher's graph is freed at once.
        """
        if not (teacher.logits.requires_grad and teacher.pooled.requires_grad):
            raise RuntimeError(
                "CRCD's gradient element differentiates the teacher's CE w.r.t. its pooled feature; the teacher's "
                "forward must be recorded by autograd (Distiller.teacher_grad)."
            )
        ce_t = F.cross_entropy(as_float32(teacher.logits), labels)
        (g_t,) = torch.autograd.grad(ce_t, teacher.pooled)
        ce_s = F.cross_entropy(as_float32(student.logits), labels)
        (g_s,) = torch.autograd.grad(ce_s, student.pooled, create_graph=True)
        return as_float32(g_s), as_float32(g_t.detach())

    def gradient_loss(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, contrast_idx: Tensor) -> Tensor:
        """L_grad, already multiplied by ``grad_weight`` (the factor that multiplies KD in the total)."""
        g_s, g_t = self.gradient_elements(student, teacher, batch.labels)
        if self.grad_type == "mse":
            cosine = F.cosine_similarity(g_t.flatten(1), g_s.flatten(1), dim=1)
            return GRAD_MSE_SCALE * (1 - cosine.mean()) * self.grad_weight
        return self.grad_relation(g_s, g_t, batch.index, contrast_idx) * self.grad_weight

    def loss_terms(
        self, student: ModelOutput, teacher: ModelOutput, batch: Batch, contrast_idx: Tensor, iteration: int | Tensor
    ) -> dict[str, Tensor]:
        """The weighted terms for given contrast indices at 0-based training ``iteration``; updates the
        memory banks after scoring.

        Everything the reference computes runs in every iteration (memory updates included); from
        ``switch_iteration`` on the KD and relation terms are multiplied by 0, as its weight schedule does.
        """
        self._require_setup()
        # A 0-dim tensor, so the comparison with a device counter needs no host synchronisation.
        on = (torch.as_tensor(iteration) < self.switch_iteration).to(torch.float32)
        kd = kd_loss(student.logits, teacher.logits.detach(), self.kd_temperature)
        crcd = self.relation(student.pooled, teacher.pooled.detach(), batch.index, contrast_idx)
        terms = {"kd": self.kd_weight * kd * on, "crcd": self.crcd_weight * crcd * on}
        if self.grad_type != "none":
            grad_on = on if self.schedule_grad_term else 1.0
            terms["grad"] = self.kd_weight * kd * self.gradient_loss(student, teacher, batch, contrast_idx) * grad_on
        return terms

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        self._require_setup()
        contrast_idx = self.sampler.draw(batch.index, batch.labels, epoch)
        terms = self.loss_terms(student, teacher, batch, contrast_idx, self.iteration)
        if self.training:
            self.iteration += 1
        return terms
