"""Distillation methods, each an ``nn.Module`` under the contract of ``base.Distiller``."""

from distillbench.distillers.base import Batch, Distiller
from distillbench.distillers.combined import Combined
from distillbench.distillers.kd import KD, kd_loss

__all__ = ["KD", "Batch", "Combined", "Distiller", "kd_loss"]
