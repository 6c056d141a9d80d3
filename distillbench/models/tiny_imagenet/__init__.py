"""The networks of mdistiller's Tiny-ImageNet cells (DOT's table), for 64x64 inputs and 200 classes.

mdistiller (commit a08d46f, ``mdistiller/models/cifar/__init__.py``, ``tiny_imagenet_model_dict``) trains them
from its CIFAR-style code, not torchvision's ImageNet models: ResNet18 from ``resnetv2.py`` (a 3x3 stride-1 stem,
no max-pool), MobileNetV2 from ``mv2_tinyimagenet.py`` and ShuffleV2 from ``ShuffleNetv2.py``. Each keeps that
code's state-dict keys, so its released teacher (``tiny_imagenet_teachers/ResNet18_vanilla/ti_res18``) loads.
"""

from distillbench.models.tiny_imagenet.mobilenetv2 import MODELS as _MOBILENET
from distillbench.models.tiny_imagenet.resnet18 import MODELS as _RESNET
from distillbench.models.tiny_imagenet.shufflenetv2 import MODELS as _SHUFFLE

TINY_IMAGENET_MODELS = {**_RESNET, **_MOBILENET, **_SHUFFLE}

__all__ = ["TINY_IMAGENET_MODELS"]
