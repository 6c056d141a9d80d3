"""The one shape every model's forward pass takes when a distiller needs more than logits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class ModelOutput:
    """Logits plus the feature list in RepDistiller's ``is_feat=True`` layout.

    ``feats`` holds the stem/stage maps first and the flattened pooled embedding (the
    classifier's input) last, so a method that taps ``feat[2]`` or ``feat[-1]`` in its
    reference code taps ``feats[2]`` or ``feats[-1]`` here.
    """

    logits: Tensor
    feats: list[Tensor]
    # Set by ``probe_shapes`` when the model has ``get_bn_before_relu`` (the BN layers whose outputs
    # feed each stage's final ReLU): OFD reads its margins off the teacher's at setup.
    bn_before_relu: Callable[[], list[nn.BatchNorm2d]] | None = None

    @property
    def pooled(self) -> Tensor:
        return self.feats[-1]


def forward_features(model: nn.Module, x: Tensor, preact: bool = False) -> ModelOutput:
    """Run ``model`` once and return its logits with the feature list.

    ``preact=True`` asks for the pre-activation versions of the stage outputs (AB taps
    them); models for which the distinction does not exist ignore it, as the reference does.
    """
    feats, logits = model(x, is_feat=True, preact=preact)
    return ModelOutput(logits=logits, feats=list(feats))


def frozen_forward(model: nn.Module, x: Tensor, preact: bool = False) -> ModelOutput:
    """A frozen teacher's outputs, computed without autograd.

    ``no_grad`` rather than ``inference_mode``: every loss keeps the teacher's outputs as targets, and
    inference tensors cannot be saved for backward, so they would need a copy of every map each step.
    """
    with torch.no_grad():
        return forward_features(model, x, preact=preact)


@torch.no_grad()
def probe_shapes(model: nn.Module, input_shape: tuple[int, ...], preact: bool = False) -> ModelOutput:
    """A dry forward on zeros, in eval mode, to size a distiller's extras from the real model."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = torch.zeros(input_shape, device=param.device, dtype=param.dtype)
        out = forward_features(model, x, preact=preact)
        out.bn_before_relu = getattr(model, "get_bn_before_relu", None)
        return out
    finally:
        model.train(was_training)
