"""Relational representation distillation (Giakoumoglou & Stathaki, arXiv 2407.12073).

Both pooled features are projected by linear heads onto the unit sphere and scored against a
set of reference embeddings. The student's similarity distribution (softmax at tau_s) is
pulled towards the teacher's (softmax at tau_t) by a soft cross-entropy. The authors' code
(giakoumoglou/rrd, giakoumoglou/distillers) holds the references in one of two ways, its
``--memory_type``:

* ``fifo`` (:class:`RRD`, what the README commands run): a queue of the last K teacher
  embeddings;
* ``momentum`` (:class:`RRDMomentum`): CRD's two memory banks with class-aware negatives, the
  soft cross-entropy applied to CRD's already exponentiated exp(s / tau) / Z outputs.

In both, the teacher side of the loss is detached and the queue or banks carry no graph, so
``embed_t`` never receives a gradient: it stays a fixed random projection. It is still in
the optimiser, as in the reference, whose SGD skips parameters without a gradient (weight
decay included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.distillers.memory import SAMPLING_MODES, build_contrast_memory
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput
from distillbench.runtime import distributed

# When the FIFO variant adds the current batch's teacher keys to the queue: after scoring it
# (2024 code, the published table) or before (2025 code, so each row finds its own key).
ENQUEUE_ORDERS = ("after_scoring", "before_scoring")


def relational_loss(
    student_scores: Tensor, teacher_scores: Tensor, student_temperature: float, teacher_temperature: float
) -> Tensor:
    """Cross-entropy from softmax(teacher / tau_t) to softmax(student / tau_s), summed over the
    references and averaged over the batch; the teacher distribution is a detached target."""
    target = F.softmax(teacher_scores.detach() / teacher_temperature, dim=1)
    return -(target * F.log_softmax(student_scores / student_temperature, dim=1)).sum(1).mean()


class _RelationalHeads(Distiller):
    """The projection heads and temperatures shared by both memory types."""

    teacher_cacheable = True

    def __init__(self, weight: float, feat_dim: int, student_temperature: float, teacher_temperature: float):
        super().__init__()
        if feat_dim < 1:
            raise ConfigError(f"feat_dim must be positive, got {feat_dim}.")
        if student_temperature <= 0 or teacher_temperature <= 0:
            raise ConfigError(
                f"Temperatures must be positive, got tau_s = {student_temperature}, tau_t = {teacher_temperature}."
            )
        self.weight = weight
        self.feat_dim = feat_dim
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature

    def _build_heads(self, student: ModelOutput, teacher: ModelOutput) -> None:
        # Built first, student then teacher, from the global RNG, as the reference does.
        self.embed_s = nn.Linear(student.pooled.flatten(1).shape[1], self.feat_dim)
        self.embed_t = nn.Linear(teacher.pooled.flatten(1).shape[1], self.feat_dim)

    def _embed(self, f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
        """L2-normalised projections; the teacher's is computed without a graph (it never trains)."""
        v_s = F.normalize(self.embed_s(as_float32(f_s).flatten(1)), dim=1)
        with torch.no_grad():
            v_t = F.normalize(self.embed_t(as_float32(f_t.detach()).flatten(1)), dim=1)
        return v_s, v_t

    def _scores_loss(self, student_scores: Tensor, teacher_scores: Tensor) -> Tensor:
        return relational_loss(student_scores, teacher_scores, self.student_temperature, self.teacher_temperature)


class RRD(_RelationalHeads):
    """``weight * relational_loss`` against a FIFO queue of the last K teacher embeddings.

    Versions of the reference (``enqueue`` and the temperatures select them):

    * 2024, which produced the published table: the batch is scored against the queue as it
      was, then its teacher keys are enqueued; tau_s = 0.04, tau_t = 0.10 (distillers/RRD.py
      from ee559b3, 2024-07-14, to 72aa7d7, 2024-09-16; before 59a7ae4 its L2 normalisation
      had no eps, which only matters for an all-zero projection). Defaults here.
    * 2025: the keys are enqueued first, so each row of teacher scores includes the sample's
      own key, at similarity 1; tau_s = 0.1, tau_t = 0.02 (cifar/distillers/RRD.py from
      1c0e48d, 2025-02-11, unchanged at rrd 83cefda).

    The queue (K x d, randn normalised along dim 0 as in the reference) and its pointer are
    buffers, so they are checkpointed.

    Partial batches: the reference asserts K % B == 0 and its loader drops the last partial
    batch (781 steps of 64 per epoch, 16 images unused). Ours keeps that batch (50 000 =
    781 * 64 + 16), so the queue is a ring buffer: a batch's keys fill the slots from the
    pointer on, modulo K, wrapping around the end. For batches that tile K this is exactly the
    reference's slice assignment; after a partial batch the pointer is no longer a multiple of
    B and later batches may straddle the end, where the reference's slice would fail (§9 item
    26). The queue therefore always holds the most recent K teacher keys, and in the 2025
    order every batch, partial or not, finds its own keys in it. Only B <= K is required.
    """

    def __init__(
        self,
        weight: float = 1.0,
        feat_dim: int = 128,
        queue_size: int = 16384,
        student_temperature: float = 0.04,
        teacher_temperature: float = 0.10,
        enqueue: str = "after_scoring",
    ):
        super().__init__(weight, feat_dim, student_temperature, teacher_temperature)
        if queue_size < 1:
            raise ConfigError(f"queue_size must be positive, got {queue_size}.")
        if enqueue not in ENQUEUE_ORDERS:
            raise ConfigError(f"enqueue must be one of {ENQUEUE_ORDERS}, got {enqueue!r}.")
        self.queue_size = queue_size
        self.enqueue = enqueue

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        device = student.pooled.device
        self._build_heads(student, teacher)
        self.register_buffer("queue", F.normalize(torch.randn(self.queue_size, self.feat_dim), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.to(device)

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        """Overwrite the oldest rows with ``keys``, from the pointer on, wrapping around the end.

        On several ranks the global batch's keys are enqueued, so every rank keeps the same queue.
        """
        keys = distributed.gather_batch(keys)
        size = self.queue.shape[0]
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=self.queue.device)) % size
        self.queue.index_copy_(0, slots, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def queue_loss(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        """The unweighted RRD loss of one batch; updates the queue in the configured order."""
        if "queue" not in self._buffers:
            raise RuntimeError("RRD.setup() must run before the first forward: it sizes the heads and the queue.")
        if f_s.shape[0] > self.queue.shape[0]:
            raise ConfigError(
                f"A batch of {f_s.shape[0]} does not fit a queue of {self.queue.shape[0]}; raise the distiller's "
                "queue_size (distiller.method.queue_size, or distiller.method.<part>.queue_size in a combined config)."
            )
        with torch.autocast(device_type=f_s.device.type, enabled=False):
            v_s, v_t = self._embed(f_s, f_t)
            if self.enqueue == "before_scoring":
                self._enqueue(v_t)
            # A snapshot: the queue is overwritten in place while autograd still needs it.
            queue = self.queue.clone()
            loss = self._scores_loss(v_s @ queue.t(), v_t @ queue.t())
            if self.enqueue == "after_scoring":
                self._enqueue(v_t)
        return loss

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        return {"rrd": self.weight * self.queue_loss(student.pooled, teacher.pooled)}


class RRDMomentum(_RelationalHeads):
    """``weight * relational_loss`` on CRD's memory outputs (the reference's ``momentum`` memory).

    The memory is CRD's (:mod:`distillbench.distillers.memory`: class-aware negatives, Z frozen
    after the first batch, momentum update after scoring, tau = ``temperature``). Its
    student-anchored output exp(v_s . m_t / tau) / Z is the student's score and its
    teacher-anchored output the teacher's; the soft cross-entropy divides these exponentiated
    values, not the similarities, by tau_s and tau_t. The momentum memory exists only in the
    2025 code (cifar/distillers/RRD.py from 1c0e48d, unchanged at rrd 83cefda), so its
    temperatures are the defaults.
    """

    def __init__(
        self,
        weight: float = 1.0,
        feat_dim: int = 128,
        num_negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        mode: str = "exact",
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.02,
    ):
        super().__init__(weight, feat_dim, student_temperature, teacher_temperature)
        if mode not in SAMPLING_MODES:
            raise ConfigError(f"mode must be one of {SAMPLING_MODES}, got {mode!r}.")
        self.num_negatives = num_negatives
        self.temperature = temperature
        self.momentum = momentum
        self.mode = mode

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        device = student.pooled.device
        self._build_heads(student, teacher)
        self.memory, self.sampler = build_contrast_memory(
            train_labels, self.feat_dim, self.num_negatives, self.temperature, self.momentum, self.mode)
        self.to(device)

    def memory_loss(self, f_s: Tensor, f_t: Tensor, index: Tensor, contrast_idx: Tensor) -> Tensor:
        """The unweighted loss for given contrast indices; updates the memory after scoring."""
        self._require_setup()
        with torch.autocast(device_type=f_s.device.type, enabled=False):
            v_s, v_t = self._embed(f_s, f_t)
            student_anchored, teacher_anchored = self.memory(v_s, v_t, index, contrast_idx)
            return self._scores_loss(student_anchored, teacher_anchored)

    def _require_setup(self) -> None:
        if "memory" not in self._modules:
            raise RuntimeError(
                "RRDMomentum.setup() must run before the first forward: it sizes the heads and the memory."
            )

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        self._require_setup()
        contrast_idx = self.sampler.draw(batch.index, batch.labels, epoch)
        return {"rrd": self.weight * self.memory_loss(student.pooled, teacher.pooled, batch.index, contrast_idx)}
