"""Distillation methods, each an ``nn.Module`` under the contract of ``base.Distiller``."""

from distillbench.distillers.base import Batch, Distiller
from distillbench.distillers.combined import Combined
from distillbench.distillers.kd import KD, kd_loss
from distillbench.distillers.kdsvd import KDSVD
from distillbench.distillers.ofd import OFD
from distillbench.distillers.reviewkd import ReviewKD

__all__ = ["KD", "KDSVD", "OFD", "Batch", "Combined", "Distiller", "ReviewKD", "kd_loss"]
