"""RepDistiller's CIFAR architectures, same state-dict keys and feature lists, written anew."""

from distillbench.models.cifar.mobilenetv2 import MODELS as _MOBILENET
from distillbench.models.cifar.resnet import MODELS as _RESNET
from distillbench.models.cifar.resnet_bottleneck import MODELS as _RESNET50
from distillbench.models.cifar.shufflenetv1 import MODELS as _SHUFFLE_V1
from distillbench.models.cifar.shufflenetv2 import MODELS as _SHUFFLE_V2
from distillbench.models.cifar.vgg import MODELS as _VGG
from distillbench.models.cifar.wrn import MODELS as _WRN

CIFAR_MODELS = {**_RESNET, **_RESNET50, **_WRN, **_VGG, **_MOBILENET, **_SHUFFLE_V1, **_SHUFFLE_V2}

__all__ = ["CIFAR_MODELS"]
