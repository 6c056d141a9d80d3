"""Every CIFAR architecture against RepDistiller's own model files.

``data/repdistiller_b84f547_layouts.json`` was computed once by instantiating the model files
of HobbitLong/RepDistiller at commit b84f547 (``models/__init__.py::model_dict``) with
``num_classes=100``: parameter count, ``state_dict()`` keys and shapes in order, and, after
filling every state-dict entry with the deterministic pattern of ``reference_fill`` below, the
float64 eval-mode forward ``model(x, is_feat=True, preact=...)`` on the fixed input of
``reference_input``: each feature's shape and (sum, abs-sum, sum of squares), and the same
statistics of the logits. Equal statistics under equal weights mean the same computation,
not just the same layout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from distillbench.models import create_model, forward_features, list_models
from distillbench.models.cifar import CIFAR_MODELS

REFERENCE = json.loads((Path(__file__).parent / "data" / "repdistiller_b84f547_layouts.json").read_text())


def reference_fill(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for i, (key, value) in enumerate(state_dict.items()):
        if not value.is_floating_point():
            out[key] = value.clone()
            continue
        pattern = torch.sin(0.37 * torch.arange(value.numel(), dtype=torch.float64) + 1.3 * i)
        if key.endswith("running_var"):
            filled = 1.0 + 0.5 * pattern.abs()
        elif key.endswith("running_mean"):
            filled = 0.1 * pattern
        else:
            fan_in = value.numel() / value.shape[0] if value.dim() > 1 else 1.0
            filled = pattern / math.sqrt(max(fan_in, 1.0))
        out[key] = filled.reshape(value.shape).to(value.dtype)
    return out


def reference_input() -> torch.Tensor:
    return torch.sin(0.011 * torch.arange(2 * 3 * 32 * 32, dtype=torch.float64)).reshape(2, 3, 32, 32)


def stats(t: torch.Tensor) -> list[float]:
    t = t.double()
    return [t.sum().item(), t.abs().sum().item(), (t * t).sum().item()]


def test_zoo_lists_exactly_the_reference_architectures():
    assert sorted(REFERENCE) == sorted(CIFAR_MODELS)
    assert set(CIFAR_MODELS) <= set(list_models())


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_parameter_count_and_state_dict_layout(name):
    model = create_model(name, num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE[name]["params"]
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == REFERENCE[name]["state_dict"]


@pytest.mark.parametrize("preact", [False, True], ids=["feat", "preact"])
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_forward_equals_reference_under_equal_weights(name, preact):
    model = create_model(name, num_classes=100).double()
    model.load_state_dict(reference_fill(model.state_dict()))
    model.eval()
    with torch.no_grad():
        out = forward_features(model, reference_input(), preact=preact)
    expected = REFERENCE[name]["preact" if preact else "feat"]
    assert [list(f.shape[1:]) for f in out.feats] == expected["shapes"]
    for i, (feat, want) in enumerate(zip(out.feats, expected["stats"], strict=True)):
        assert stats(feat) == pytest.approx(want, rel=1e-9, abs=1e-9), f"feature {i}"
    assert stats(out.logits) == pytest.approx(expected["logits"], rel=1e-9, abs=1e-9)
    assert out.pooled is out.feats[-1]


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "MobileNetV2"])
def test_plain_forward_returns_logits_for_other_class_counts(name):
    model = create_model(name, num_classes=10).eval()
    assert model(torch.zeros(3, 3, 32, 32)).shape == (3, 10)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        create_model("resnet33")
    message = str(err.value)
    assert "resnet33" in message
    for name in ("resnet32x4", "wrn_40_2", "ShuffleV2", "vgg13"):
        assert name in message
