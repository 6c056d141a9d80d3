"""``create_model(name, num_classes)``: the one entry point to every architecture."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from distillbench.errors import ConfigError
from distillbench.models.cifar import CIFAR_MODELS
from distillbench.models.imagenet import IMAGENET_MODELS
from distillbench.models.timm_any import PREFIX as TIMM_PREFIX
from distillbench.models.timm_any import create_timm_model
from distillbench.models.tiny_imagenet import TINY_IMAGENET_MODELS

_REGISTRY: dict[str, Callable[..., nn.Module]] = {**CIFAR_MODELS, **IMAGENET_MODELS, **TINY_IMAGENET_MODELS}


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 100, **kwargs) -> nn.Module:
    """Build architecture ``name`` with a ``num_classes``-way classifier (``pretrained=True`` for the
    ImageNet models with released weights). ``timm/<name>`` builds any timm classifier."""
    if name.startswith(TIMM_PREFIX):
        return create_timm_model(name, num_classes=num_classes, **kwargs)
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"Unknown model '{name}'. Valid names are: {', '.join(list_models())}. "
            "Names are case-sensitive and follow RepDistiller's for CIFAR (e.g. 'resnet32x4', 'wrn_40_2', "
            "'MobileNetV2'), or timm/<name> for any timm model; pick one in the teacher.arch / student.arch field."
        ) from None
    return factory(num_classes=num_classes, **kwargs)
