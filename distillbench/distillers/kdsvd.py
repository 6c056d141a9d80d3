"""KD-SVD, "Self-supervised Knowledge Distillation Using Singular Value Decomposition" (Lee et al., ECCV 2018),
as RepDistiller implements it (distiller_zoo/KDSVD.py @ b84f547).

Each stage map, seen as an (H*W) x C matrix per sample, is compressed to its leading right singular
vectors (directions in channel space). The student keeps k + 3 of them and, per teacher vector, uses the
one it is most collinear with, sign-corrected. What is matched is not the vectors themselves but an RBF
of their element-wise differences between consecutive stages: the relation between stage i-1 and stage i.

mdistiller's copy (mdistiller/distillers/KDSVD.py @ a08d46f, line 42) flattens maps to (C*H) x W instead,
so its singular vectors live along the image width; the original TensorFlow code and RepDistiller use
channels, which is what is done here. Neither repository publishes a KD-SVD number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput

# KDSVD.py:31-32: RBF bandwidth, exp(-d^2 / 8).
RBF_DENOMINATOR = 8.0
# KDSVD.py:24: extra singular vectors the student offers for alignment with the teacher's k.
STUDENT_EXTRA_VECTORS = 3


def finite_or_zero(x: Tensor) -> Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def leading_svd(feat: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Singular values and right singular vectors of each sample's (H*W) x C map, first ``n`` of each,
    every vector and the value list L2-normalised (KDSVD.py:45-61).

    Signs are LAPACK's (``torch.linalg.svd``, the routine behind the reference's ``torch.svd``).
    """
    b, c, h, w = feat.shape
    x = feat.reshape(b, c, h * w).transpose(-2, -1)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    s, v = finite_or_zero(s), finite_or_zero(vh.mT)
    return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)


def align_to_teacher(v_s: Tensor, v_t: Tensor) -> Tensor:
    """For each teacher vector, the student vector of largest |cosine|, times the cosine's sign (KDSVD.py:69-75)."""
    cosine = v_s.transpose(-2, -1) @ v_t
    best = cosine.abs().amax(dim=1, keepdim=True)
    mask = torch.where(cosine.abs() == best, torch.sign(cosine), torch.zeros_like(cosine))
    return v_s @ mask


def rbf_relation(v: Tensor, v_prev: Tensor) -> Tensor:
    """exp(-(v[c] - v_prev[c'])^2 / 8) for every channel pair of two consecutive stages, per vector."""
    return torch.exp(-(v.unsqueeze(2) - v_prev.unsqueeze(1)).pow(2) / RBF_DENOMINATOR)


def kdsvd_loss(g_s: list[Tensor], g_t: list[Tensor], k: int = 1) -> Tensor:
    """Sum over consecutive stage pairs of the squared RBF-relation differences, divided by the batch size.

    Non-finite entries (an SVD gradient through repeated singular values) are zeroed, as the
    reference does (KDSVD.py:35).
    """
    terms = []
    prev_s = prev_t = None
    for f_s, f_t in zip(g_s, g_t, strict=False):
        s_t, v_t = leading_svd(as_float32(f_t), k)
        _, v_s = leading_svd(as_float32(f_s), k + STUDENT_EXTRA_VECTORS)
        v_s = align_to_teacher(v_s, v_t)
        s_t = s_t.unsqueeze(1)
        v_t, v_s = v_t * s_t, v_s * s_t
        if prev_s is not None:
            diff = (rbf_relation(v_s, prev_s) - rbf_relation(v_t, prev_t).detach()).pow(2)
            terms.append(finite_or_zero(diff).sum())
        prev_s, prev_t = v_s, v_t
    if not terms:
        raise ValueError("kdsvd_loss needs at least two stage maps per network.")
    return sum(terms) / g_s[0].shape[0]


class KDSVD(Distiller):
    """``weight * kdsvd_loss(student feats[1:-1], teacher feats[1:-1], k)`` (RepDistiller's helper/loops.py:157-161)."""

    def __init__(self, weight: float = 1.0, k: int = 1):
        super().__init__()
        self.weight = weight
        self.k = k

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        pairs = list(zip(student.feats[1:-1], teacher.feats[1:-1], strict=False))
        if len(pairs) < 2:
            raise ConfigError(
                "KDSVD relates consecutive stages: it needs at least two stage maps in feats[1:-1] of both networks."
            )
        for i, (f_s, f_t) in enumerate(pairs, start=1):
            if f_s.dim() != 4 or f_t.dim() != 4 or f_s.shape[1] != f_t.shape[1]:
                raise ConfigError(
                    f"KDSVD compares singular vectors in channel space, so student and teacher stage maps need the "
                    f"same number of channels; feats[{i}] has shape {tuple(f_s.shape[1:])} (student) and "
                    f"{tuple(f_t.shape[1:])} (teacher)."
                )

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        return {"kdsvd": self.weight * kdsvd_loss(student.feats[1:-1], teacher.feats[1:-1], self.k)}
