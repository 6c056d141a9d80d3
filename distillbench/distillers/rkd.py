"""Relational knowledge distillation (distance and angle terms), as in RepDistiller.

Only the relations among the pooled vectors of a batch are matched, so student and teacher
dimensions may differ and no module is added.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.models.outputs import ModelOutput


def pairwise_distances(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances from the Gram expansion, clamped at ``eps`` before the root, diagonal 0.

    The clamp keeps the root differentiable for coincident samples; the diagonal is zeroed
    afterwards, so it carries no gradient.
    """
    sq = x.pow(2).sum(dim=1)
    dist = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * x @ x.t()).clamp(min=eps).sqrt()
    diagonal = torch.eye(len(x), dtype=torch.bool, device=x.device)
    return dist.masked_fill(diagonal, 0.0)


def normalized_distances(x: Tensor) -> Tensor:
    """Distances divided by the mean of the strictly positive ones (the zero diagonal is left out)."""
    dist = pairwise_distances(x)
    positive = dist > 0
    return dist / (torch.where(positive, dist, 0.0).sum() / positive.sum())


def angles(x: Tensor) -> Tensor:
    """Cosines ``[i, j, k]`` of the angle at sample i between the directions to j and to k (B*B*B, flat)."""
    directions = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)
    return torch.bmm(directions, directions.transpose(1, 2)).flatten()


def rkd_losses(feat_s: Tensor, feat_t: Tensor) -> tuple[Tensor, Tensor]:
    """(distance loss, angle loss), each a smooth-L1 mean; the teacher's side carries no graph."""
    student = as_float32(feat_s).flatten(1)
    teacher = as_float32(feat_t).flatten(1)
    if len(student) < 2:
        raise ValueError("RKD's distance term needs a batch of at least two samples.")
    with torch.no_grad():
        dist_t = normalized_distances(teacher)
        angle_t = angles(teacher)
    loss_distance = F.smooth_l1_loss(normalized_distances(student), dist_t)
    loss_angle = F.smooth_l1_loss(angles(student), angle_t)
    return loss_distance, loss_angle


class RKD(Distiller):
    """``weight * (distance_weight * L_distance + angle_weight * L_angle)``, logged as two terms."""

    teacher_cacheable = True
    # One sample has no distance (the reference's mean over none is NaN); with two, the normalised distance is 1
    # and every angle has one direction for both networks, so both terms and their gradients are exactly 0.
    min_batch_size = 3

    def __init__(self, weight: float = 1.0, distance_weight: float = 25.0, angle_weight: float = 50.0):
        super().__init__()
        self.weight = weight
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        loss_distance, loss_angle = rkd_losses(student.pooled, teacher.pooled)
        return {
            "rkd_distance": self.weight * self.distance_weight * loss_distance,
            "rkd_angle": self.weight * self.angle_weight * loss_angle,
        }
