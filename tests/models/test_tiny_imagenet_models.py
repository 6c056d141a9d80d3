"""The Tiny-ImageNet networks keep mdistiller's state-dict layout (megvii-research/mdistiller @ a08d46f,
``mdistiller/models/cifar/{resnetv2,mv2_tinyimagenet,ShuffleNetv2}.py`` built with ``num_classes=200``), so its
released teacher loads. The digests were computed once from those reference modules: sha256 over the ordered
``key:shape`` lines, first 16 hex digits; only the numbers are kept here."""

from __future__ import annotations

import hashlib

import pytest
import torch

from distillbench.models import create_model, forward_features

LAYOUT = {  # arch -> (state-dict keys, trainable parameters, digest of the ordered key:shape lines)
    "ResNet18": (122, 11271432, "8efe5cfd1d2c3f05"),
    "MobileNetV2_tinyimagenet": (373, 2497480, "3ccb7563e2474055"),
    "ShuffleV2_tinyimagenet": (338, 1458028, "68c81cd3b5efe0ef"),
}


def digest(state: dict[str, torch.Tensor]) -> str:
    return hashlib.sha256("\n".join(f"{k}:{tuple(v.shape)}" for k, v in state.items()).encode()).hexdigest()[:16]


@pytest.mark.parametrize("arch", sorted(LAYOUT))
def test_state_dict_layout_is_mdistillers(arch):
    model = create_model(arch, num_classes=200)
    keys, params, want = LAYOUT[arch]
    state = model.state_dict()
    assert (len(state), sum(p.numel() for p in model.parameters()), digest(state)) == (keys, params, want)


def test_shufflev2_for_64px_has_the_cifar_shufflev2_keys():
    assert list(create_model("ShuffleV2_tinyimagenet", num_classes=200).state_dict()) == list(
        create_model("ShuffleV2", num_classes=200).state_dict())


@pytest.mark.parametrize("arch", sorted(LAYOUT))
def test_64px_inputs_give_200_logits_and_the_pooled_feature_last(arch):
    model = create_model(arch, num_classes=200).eval()
    with torch.no_grad():
        out = forward_features(model, torch.zeros(1, 3, 64, 64))
    assert out.logits.shape == (1, 200)
    assert out.pooled.dim() == 2 and out.pooled.shape[1] in (512, 1024, 1280)
