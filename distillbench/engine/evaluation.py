"""Test-set evaluation: top-1, top-5 and mean cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from distillbench.engine.metrics import EpochMeter, correct_topk


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str) -> dict[str, float]:
    """Accuracy in percent and loss of ``model`` (put in eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    meter = EpochMeter(device)
    for images, labels, *_ in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        logits = model(images)
        meter.add({"loss": F.cross_entropy(logits.float(), labels)}, len(labels))
        top1, top5 = correct_topk(logits, labels, (1, 5))
        meter.add_counts({"acc1": top1 * 100.0, "acc5": top5 * 100.0})
    model.train(was_training)
    return meter.averages()
