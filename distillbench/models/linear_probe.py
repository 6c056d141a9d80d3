"""Linear probe: a frozen network with a fresh linear classifier on its pooled feature.

CRD (Tian et al. 2020, Table 4) and RRD measure how well a distilled student's representation
transfers: the student trained on CIFAR-100 is frozen and only a linear layer on its pooled
feature (``feats[-1]``, the input of its own classifier) is trained on another dataset
(STL-10, Tiny-ImageNet). ``LinearProbe`` has the zoo models' forward signature, so the ordinary
``Trainer`` trains it: only the linear layer requires gradients, so only it is optimised.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from distillbench.models.outputs import probe_shapes
from distillbench.models.registry import create_model
from distillbench.weights import load_model_weights


class LinearProbe(nn.Module):
    """``fc(backbone(x).feats[-1])`` with the backbone frozen.

    The backbone's parameters never require gradients and its forward runs under ``no_grad``.
    With ``freeze_bn`` (the default) it also stays in eval mode when ``.train()`` is called, so
    its BatchNorm layers normalise with the source dataset's statistics and never update them:
    the probe reads the representation exactly as it was learnt. ``freeze_bn=False`` lets the
    backbone follow train/eval mode as RRD's transfer script does (its ``model.train()`` moves
    the frozen network's BN running statistics towards the target dataset).
    """

    def __init__(self, backbone: nn.Module, embedding_dim: int, num_classes: int, init_std: float | None = 0.01,
                 freeze_bn: bool = True):
        super().__init__()
        self.backbone = backbone
        self.freeze_bn = freeze_bn
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.fc = nn.Linear(embedding_dim, num_classes)
        if init_std is not None:  # RRD's transfer script: weights N(0, 0.01^2), bias 0
            nn.init.normal_(self.fc.weight, mean=0.0, std=init_std)
            nn.init.zeros_(self.fc.bias)
        self.train()

    def train(self, mode: bool = True) -> LinearProbe:
        """Set the head's mode; the backbone stays in eval mode while ``freeze_bn``."""
        super().train(mode)
        if self.freeze_bn:
            self.backbone.eval()
        return self

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False):
        """Logits, or with ``is_feat`` ``(backbone feats, logits)``; ``feats[-1]`` is the linear layer's input."""
        with torch.no_grad():
            feats, _ = self.backbone(x, is_feat=True, preact=preact and is_feat)
        logits = self.fc(feats[-1])
        return (list(feats), logits) if is_feat else logits


def build_linear_probe(
    arch: str,
    checkpoint: str | Path,
    num_classes: int,
    source_num_classes: int = 100,
    input_size: int = 32,
    init_std: float | None = 0.01,
    freeze_bn: bool = True,
) -> LinearProbe:
    """A ``num_classes``-way probe on the network ``arch`` whose weights are in ``checkpoint``.

    The backbone is built with the SOURCE dataset's classifier (``source_num_classes``) so the
    checkpoint loads strictly (any mismatch names the keys or shapes that differ); that classifier
    is never used. The linear layer's width is read from a dry forward on a zero batch of
    ``input_size`` images rather than from a per-architecture attribute.
    """
    backbone = create_model(arch, num_classes=source_num_classes)
    load_model_weights(backbone, Path(checkpoint), arch, fields="probe.arch and probe.source_num_classes")
    embedding_dim = probe_shapes(backbone, (2, 3, input_size, input_size)).pooled.shape[1]
    return LinearProbe(backbone, embedding_dim, num_classes, init_std=init_std, freeze_bn=freeze_bn)
