"""Model zoo: the CIFAR architectures of RepDistiller, reached through ``create_model``."""

from distillbench.models.outputs import ModelOutput, forward_features, probe_shapes
from distillbench.models.registry import create_model, list_models

__all__ = ["ModelOutput", "create_model", "forward_features", "list_models", "probe_shapes"]
