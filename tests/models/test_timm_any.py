"""Any timm model through ``create_model("timm/<name>")``: the common feature layout, timm's own keys."""

from __future__ import annotations

import pytest
import timm
import torch

from distillbench.errors import ConfigError
from distillbench.models import create_model
from distillbench.models.outputs import forward_features


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_stage_maps_then_pooled_then_logits(name) -> None:
    torch.manual_seed(0)
    model = create_model(f"timm/{name}", num_classes=10).eval()
    size = 64 if name.startswith("resnet") else 224
    x = torch.randn(2, 3, size, size)
    out = forward_features(model, x)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, model(x))
        reference = timm.create_model(name, num_classes=10).eval()
        reference.load_state_dict(model.state_dict())  # timm's own keys
        torch.testing.assert_close(out.logits, reference(x))
    assert out.pooled.shape == (2, reference.num_features)
    assert len(out.feats) >= 3 and all(f.dim() == 4 for f in out.feats[:-1])


def test_unknown_timm_names_and_offline_weights_are_config_errors(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="timm has no model"):
        create_model("timm/not_a_model", num_classes=10)

    def offline(*args, **kwargs):
        raise OSError("no internet")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ConfigError, match="teacher.checkpoint"):
        create_model("timm/resnet18", num_classes=1000, pretrained=True)
