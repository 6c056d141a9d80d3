"""The ImageNet zoo: mdistiller's feature layout, torchvision's state-dict keys, offline errors."""

from __future__ import annotations

import pytest
import timm
import torch
from torchvision.models import ResNet34_Weights, resnet18

from distillbench.errors import ConfigError
from distillbench.models import forward_features
from distillbench.models.imagenet import IMAGENET_MODELS

# (channels, spatial side) of each feature on a 224x224 input, then the pooled width.
EXPECTED = {
    "imagenet_resnet18": ([(64, 112), (64, 56), (128, 28), (256, 14), (512, 7)], 512),
    "imagenet_resnet34": ([(64, 112), (64, 56), (128, 28), (256, 14), (512, 7)], 512),
    "imagenet_resnet50": ([(64, 112), (256, 56), (512, 28), (1024, 14), (2048, 7)], 2048),
    "imagenet_mobilenetv1": ([(128, 56), (256, 28), (512, 14), (1024, 7)], 1024),
}
CLASSIFIER = {
    "imagenet_resnet18": "fc",
    "imagenet_resnet34": "fc",
    "imagenet_resnet50": "fc",
    "imagenet_mobilenetv1": "classifier",
}


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def test_zoo_names():
    assert sorted(IMAGENET_MODELS) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_feature_layout_and_pooled_feeds_the_classifier(name, image):
    model = IMAGENET_MODELS[name](num_classes=10).eval()
    with torch.no_grad():
        out = forward_features(model, image)
        plain = model(image)
        classifier = getattr(model.body, CLASSIFIER[name])
        refed = classifier(out.pooled)
    maps, width = EXPECTED[name]
    assert [tuple(f.shape) for f in out.feats[:-1]] == [(2, c, s, s) for c, s in maps]
    assert tuple(out.pooled.shape) == (2, width)
    assert tuple(out.logits.shape) == (2, 10)
    torch.testing.assert_close(out.logits, plain)
    torch.testing.assert_close(refed, out.logits)
    torch.testing.assert_close(out.pooled, out.feats[-2].mean(dim=(2, 3)))
    assert all((f >= 0).all() for f in out.feats[:-1]), "mdistiller taps the ReLU'd maps"


def test_resnet_matches_the_plain_torchvision_forward(image):
    reference = resnet18().eval()
    model = IMAGENET_MODELS["imagenet_resnet18"]().eval()
    model.load_state_dict(reference.state_dict())
    with torch.no_grad():
        feats, logits = model(image, is_feat=True)
        stem = reference.relu(reference.bn1(reference.conv1(image)))
        torch.testing.assert_close(logits, reference(image))
    torch.testing.assert_close(feats[0], stem)


def test_torchvision_state_dict_round_trip():
    reference = resnet18()
    model = IMAGENET_MODELS["imagenet_resnet18"]()
    assert list(model.state_dict()) == list(reference.state_dict())
    model.load_state_dict(reference.state_dict())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[key])
    back = resnet18()
    back.load_state_dict(model.state_dict())
    torch.testing.assert_close(back.fc.weight, reference.fc.weight)


def test_state_dict_keys_survive_nesting():
    parent = torch.nn.Module()
    parent.student = IMAGENET_MODELS["imagenet_resnet18"]()
    keys = list(parent.state_dict())
    assert keys == ["student." + key for key in resnet18().state_dict()]
    parent.load_state_dict(parent.state_dict())


def test_mobilenet_keeps_timm_keys_with_relu():
    model = IMAGENET_MODELS["imagenet_mobilenetv1"]()
    reference = timm.create_model("mobilenetv1_100", act_layer="relu")
    assert list(model.state_dict()) == list(reference.state_dict())
    model.load_state_dict(reference.state_dict())
    assert not any(isinstance(m, torch.nn.ReLU6) for m in model.modules())


def test_offline_pretrained_names_the_checkpoint_option(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(ResNet34_Weights, "get_state_dict", offline)
    with pytest.raises(ConfigError, match=r"teacher\.checkpoint="):
        IMAGENET_MODELS["imagenet_resnet34"](pretrained=True)


def test_pretrained_rejects_other_class_counts_and_the_mobilenet_student():
    with pytest.raises(ConfigError, match="num_classes=10"):
        IMAGENET_MODELS["imagenet_resnet34"](num_classes=10, pretrained=True)
    with pytest.raises(ConfigError, match="trains from scratch"):
        IMAGENET_MODELS["imagenet_mobilenetv1"](pretrained=True)


def test_preact_is_a_config_error():
    model = IMAGENET_MODELS["imagenet_resnet18"]().eval()
    with pytest.raises(ConfigError, match="only available for the CIFAR zoo"):
        forward_features(model, torch.zeros(1, 3, 64, 64), preact=True)
