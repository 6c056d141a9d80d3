"""Contrastive representation distillation (Tian et al., ICLR 2020), as in RepDistiller.

The pooled features of both networks are projected by trainable linear heads onto the unit
sphere; each embedding is contrasted against K class-aware negatives held in the other
network's memory bank, with the NCE objective of the paper's eq. 18, in both directions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distillbench.distillers.base import Batch, Distiller, as_float32
from distillbench.distillers.memory import SAMPLING_MODES, build_contrast_memory
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput

# Keeps the NCE ratios finite when a probability underflows to 0.
NCE_EPS = 1e-7


class Embed(nn.Module):
    """Linear projection followed by L2 normalisation (no eps, as the reference)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x.flatten(1))
        return x / x.pow(2).sum(1, keepdim=True).sqrt()


def nce_loss(probs: Tensor, num_samples: int) -> Tensor:
    """NCE with noise distribution Pn = 1/N; column 0 of ``probs`` is the positive.

    -(sum_b log D1 + sum_{b, k} log D0) / B: the K negative terms are summed, not averaged.
    """
    num_negatives = probs.shape[1] - 1
    noise = num_negatives * (1.0 / num_samples)
    positive, negative = probs[:, 0], probs[:, 1:]
    log_d1 = torch.log(positive / (positive + (noise + NCE_EPS)))
    log_d0 = torch.log(noise / (negative + (noise + NCE_EPS)))
    return -(log_d1.sum() + log_d0.sum()) / probs.shape[0]


class CRD(Distiller):
    """``weight * (NCE(student-anchored) + NCE(teacher-anchored))`` on the pooled features.

    The heads are sized from the probes' pooled features and the memory from the training
    labels, in ``setup``. The teacher-anchored term trains ``embed_t`` only (the teacher is
    frozen); both heads are in the optimiser.
    """

    teacher_cacheable = True

    def __init__(
        self,
        weight: float = 0.8,
        feat_dim: int = 128,
        num_negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        mode: str = "exact",
    ):
        super().__init__()
        if mode not in SAMPLING_MODES:
            raise ConfigError(f"mode must be one of {SAMPLING_MODES}, got {mode!r}.")
        self.weight = weight
        self.feat_dim = feat_dim
        self.num_negatives = num_negatives
        self.temperature = temperature
        self.momentum = momentum
        self.mode = mode

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        device = student.pooled.device
        # Built in RepDistiller's order (heads, student bank, teacher bank) from the global RNG.
        self.embed_s = Embed(student.pooled.flatten(1).shape[1], self.feat_dim)
        self.embed_t = Embed(teacher.pooled.flatten(1).shape[1], self.feat_dim)
        self.memory, self.sampler = build_contrast_memory(
            train_labels, self.feat_dim, self.num_negatives, self.temperature, self.momentum, self.mode)
        self.to(device)

    def contrast_loss(self, f_s: Tensor, f_t: Tensor, index: Tensor, contrast_idx: Tensor) -> Tensor:
        """The unweighted CRD loss for given contrast indices; updates the memory after scoring."""
        self._require_setup()
        with torch.autocast(device_type=f_s.device.type, enabled=False):
            v_s = self.embed_s(as_float32(f_s))
            v_t = self.embed_t(as_float32(f_t.detach()))
            p_s, p_t = self.memory(v_s, v_t, index, contrast_idx)
            n = self.memory.num_samples
            return nce_loss(p_s, n) + nce_loss(p_t, n)

    def _require_setup(self) -> None:
        if "memory" not in self._modules:
            raise RuntimeError("CRD.setup() must run before the first forward: it sizes the heads and the memory.")

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        self._require_setup()
        contrast_idx = self.sampler.draw(batch.index, batch.labels, epoch)
        return {"crd": self.weight * self.contrast_loss(student.pooled, teacher.pooled, batch.index, contrast_idx)}
