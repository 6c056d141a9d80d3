"""Any timm classifier as a network of the benchmark: ``create_model("timm/<name>", ...)``.

timm's ``forward_intermediates`` gives, for most of its families (ResNets, ConvNeXts, EfficientNets,
ViTs, ...), the stage outputs next to the final features without forking the model, so a timm model
returns the same layout as every other network here: stage maps first, the pooled pre-logits vector
last, and logits. State-dict keys are timm's own, so timm checkpoints load unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from distillbench.errors import ConfigError
from distillbench.models.imagenet import FeaturesAndLogits, _add_body_prefix, _strip_body_prefix

PREFIX = "timm/"


class TimmTap(nn.Module):
    """A timm model whose forward also returns its stage outputs and pooled embedding."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.body = model
        self.register_state_dict_post_hook(_strip_body_prefix)
        self.register_load_state_dict_pre_hook(_add_body_prefix)

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | FeaturesAndLogits:
        if not is_feat:
            return self.body(x)
        if preact:
            raise ConfigError("Pre-activation feature taps exist only for the CIFAR zoo; timm models return their "
                              "stage outputs after activation. Pick a distiller that does not need preact features.")
        final, stages = self.body.forward_intermediates(x)
        pooled = self.body.forward_head(final, pre_logits=True)
        return [*stages, pooled], self.body.forward_head(final)


def create_timm_model(name: str, num_classes: int = 1000, pretrained: bool = False) -> TimmTap:
    """``name`` is ``timm/<timm model name>``; ``pretrained`` loads timm's released weights (downloaded)."""
    import timm  # here, not at the top: only a timm model needs timm (seconds to import)

    model_name = name.removeprefix(PREFIX)
    if not timm.is_model(model_name):
        raise ConfigError(
            f"timm has no model '{model_name}'. Names are timm's, e.g. timm/resnet50d, timm/convnext_tiny "
            "(`python -c \"import timm; print(timm.list_models('*convnext*'))\"` lists them)."
        )
    try:
        model = timm.create_model(model_name, pretrained=pretrained, num_classes=num_classes)
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise ConfigError(
            f"Could not load timm's pretrained weights for {model_name} ({err}). Without internet access, pass "
            "teacher.checkpoint=/path/to/weights.pth with the timm state dict (e.g. the file timm downloads, "
            "copied from a machine with internet access) and teacher.pretrained=false."
        ) from err
    if not hasattr(model, "forward_intermediates"):
        raise ConfigError(f"timm's {model_name} does not expose forward_intermediates, so its features cannot be "
                          "tapped; pick another timm model.")
    return TimmTap(model)
