"""ImageNet architectures for the ImageNet cells of the tables, tapped rather than forked.

The networks are torchvision's ResNets and timm's MobileNetV1 as their libraries build them;
``FeatureTap`` traces them with FX feature extraction to return, next to the logits, the
tensors mdistiller's ImageNet models return (``mdistiller/models/imagenet/``), so the
distillers see the same layout as on CIFAR: spatial maps first, pooled vector last.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from functools import partial
from typing import Any

from torch import Tensor, nn
from torchvision.models import (
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    WeightsEnum,
    resnet18,
    resnet34,
    resnet50,
)
from torchvision.models.feature_extraction import create_feature_extractor

from distillbench.errors import ConfigError

FeaturesAndLogits = tuple[list[Tensor], Tensor]
Extractor = Callable[..., nn.Module]

_BODY = "body."
_POOLED = "pooled"
_LOGITS = "logits"

# mdistiller's ImageNet ResNet returns relu(bn1(conv1(x))) (before the max-pool) and the
# ReLU'd output of each stage; torchvision's root ``relu`` and ``layerN`` are those tensors.
_RESNET_FEATURES = ("relu", "layer1", "layer2", "layer3", "layer4")
# mdistiller's MobileNetV1 returns the ReLU'd ends of its stride-4/8/16/32 stages (128, 256,
# 512, 1024 channels) and no stem map; they are timm's ``blocks.1`` ... ``blocks.4``.
_MOBILENET_FEATURES = ("blocks.1", "blocks.2", "blocks.3", "blocks.4")


def _move_prefix(entries: MutableMapping[str, Any], old: str, new: str) -> None:
    """Rename keys ``old + rest`` to ``new + rest`` in place, keeping the order."""
    items = list(entries.items())
    entries.clear()
    for key, value in items:
        entries[new + key[len(old) :] if key.startswith(old) else key] = value


class FeatureTap(nn.Module):
    """A torchvision/timm classifier whose forward also returns mdistiller's feature list.

    The model is traced once by ``extractor`` (torchvision's or timm's
    ``create_feature_extractor``) into ``self.body``, whose submodules keep the model's own
    qualified names. State-dict hooks drop the ``body.`` level, so ``state_dict()`` and
    ``load_state_dict()`` use the wrapped library's keys unchanged: a torchvision (or
    mdistiller) ImageNet checkpoint loads as is, and a saved student loads back into torchvision.
    """

    def __init__(
        self,
        model: nn.Module,
        feature_nodes: Sequence[str],
        pooled_node: str,
        logits_node: str,
        extractor: Extractor = create_feature_extractor,
    ) -> None:
        super().__init__()
        self.feature_nodes = tuple(feature_nodes)
        return_nodes = {node: node for node in self.feature_nodes}
        return_nodes |= {pooled_node: _POOLED, logits_node: _LOGITS}
        self.body = extractor(model, return_nodes=return_nodes)
        self.register_state_dict_post_hook(_strip_body_prefix)
        self.register_load_state_dict_pre_hook(_add_body_prefix)

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | FeaturesAndLogits:
        """Logits, or with ``is_feat`` ``([*stage maps, pooled], logits)``; ``logits == fc(pooled)``."""
        if preact:
            raise ConfigError(
                "Pre-activation feature taps are only available for the CIFAR zoo: torchvision's and "
                "timm's ImageNet blocks apply their last ReLU inside the block, so no pre-ReLU stage "
                "output exists to tap. Pick a distiller that does not need preact features."
            )
        out: Mapping[str, Tensor] = self.body(x)
        if not is_feat:
            return out[_LOGITS]
        return [*(out[node] for node in self.feature_nodes), out[_POOLED]], out[_LOGITS]


def _strip_body_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    _move_prefix(state_dict, prefix + _BODY, prefix)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        metadata.pop(prefix + _BODY[:-1], None)
        _move_prefix(metadata, prefix + _BODY, prefix)


def _add_body_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    own_keys = [key for key in state_dict if key.startswith(prefix) and not key.startswith(prefix + _BODY)]
    for key in own_keys:
        state_dict[prefix + _BODY + key[len(prefix) :]] = state_dict.pop(key)


def _pretrained_state_dict(weights: WeightsEnum, num_classes: int) -> dict[str, Tensor]:
    """torchvision's released weights, or a ConfigError naming the offline alternative."""
    released_classes = len(weights.meta["categories"])
    if num_classes != released_classes:
        raise ConfigError(
            f"pretrained=True loads {weights} with a {released_classes}-way classifier, "
            f"but num_classes={num_classes} was asked for."
        )
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except OSError as err:
        raise ConfigError(
            f"Could not download torchvision's {weights} ({err}). Pass "
            "teacher.checkpoint=/path/to/weights.pth with a torchvision state dict instead "
            "(e.g. the file torchvision downloads, copied from a machine with internet access)."
        ) from err


def _imagenet_resnet(
    builder: Callable[..., nn.Module], weights: WeightsEnum, num_classes: int = 1000, pretrained: bool = False
) -> FeatureTap:
    model = builder(num_classes=num_classes)
    if pretrained:
        model.load_state_dict(_pretrained_state_dict(weights, num_classes))
    return FeatureTap(model, _RESNET_FEATURES, pooled_node="flatten", logits_node="fc")


def imagenet_mobilenetv1(num_classes: int = 1000, pretrained: bool = False) -> FeatureTap:
    """timm's ``mobilenetv1_100`` with ReLU, mdistiller's (not timm's default ReLU6) activation."""
    if pretrained:
        raise ConfigError(
            "imagenet_mobilenetv1 has no released weights in mdistiller's setup: it is the student "
            "and trains from scratch. Pass student.checkpoint=/path/to/weights.pth to start from a "
            "saved state dict."
        )
    import timm  # here, not at the top: importing a model or a loss should not load timm (seconds)
    from timm.models import create_feature_extractor as timm_feature_extractor

    model = timm.create_model("mobilenetv1_100", pretrained=False, num_classes=num_classes, act_layer="relu")
    return FeatureTap(
        model,
        _MOBILENET_FEATURES,
        pooled_node="global_pool.flatten",
        logits_node="classifier",
        extractor=timm_feature_extractor,
    )


IMAGENET_MODELS: dict[str, Callable[..., nn.Module]] = {
    "imagenet_resnet18": partial(_imagenet_resnet, resnet18, ResNet18_Weights.IMAGENET1K_V1),
    "imagenet_resnet34": partial(_imagenet_resnet, resnet34, ResNet34_Weights.IMAGENET1K_V1),
    "imagenet_resnet50": partial(_imagenet_resnet, resnet50, ResNet50_Weights.IMAGENET1K_V1),
    "imagenet_mobilenetv1": imagenet_mobilenetv1,
}
