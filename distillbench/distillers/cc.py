"""Correlation congruence, in the form the CC authors gave the CRD benchmark (RepDistiller).

Both pooled vectors pass through a trainable linear embedding; the loss couples the absolute
student-teacher differences of consecutive samples in batch order. This is not the kernel
correlation of the CC paper, but it is what the published CIFAR-100 numbers were made with.
"""

from __future__ import annotations

from torch import Tensor, nn

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.models.outputs import ModelOutput


def correlation_congruence_loss(embed_s: Tensor, embed_t: Tensor) -> Tensor:
    """Mean over i of sum_k |e_s - e_t|[i, k] * |e_s - e_t|[i+1, k]; needs at least two samples.

    With one sample there is no consecutive pair and the reference returns NaN; raising says why.
    """
    if embed_s.shape[0] < 2:
        raise ValueError("CC pairs consecutive samples and needs a batch of at least two.")
    gap = (as_float32(embed_s) - as_float32(embed_t)).abs()
    return (gap[:-1] * gap[1:]).sum(dim=1).mean()


class CC(Distiller):
    """``weight * correlation_congruence_loss`` on linear embeddings of both pooled vectors.

    Both embeddings are optimised with the student; the teacher's one is trained through the
    teacher-side term although the teacher's features are detached.
    """

    teacher_cacheable = True
    # Consecutive samples are paired: a batch of one has no pair (the reference's mean over none is NaN).
    min_batch_size = 2

    def __init__(self, weight: float = 0.02, feat_dim: int = 128):
        super().__init__()
        self.weight = weight
        self.feat_dim = feat_dim
        self.embed_s: nn.Linear | None = None
        self.embed_t: nn.Linear | None = None

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        self.embed_s = _linear_for(student.pooled, self.feat_dim)
        self.embed_t = _linear_for(teacher.pooled, self.feat_dim)

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        if self.embed_s is None or self.embed_t is None:
            raise RuntimeError("CC.setup must run before the first forward: it sizes the embeddings.")
        embed_s = self.embed_s(student.pooled.flatten(1))
        embed_t = self.embed_t(teacher.pooled.detach().flatten(1))
        return {"cc": self.weight * correlation_congruence_loss(embed_s, embed_t)}


def _linear_for(feature: Tensor, out_dim: int) -> nn.Linear:
    """A Linear from the flattened feature size, on the probe's device and dtype."""
    return nn.Linear(feature.flatten(1).shape[1], out_dim, device=feature.device, dtype=feature.dtype)
