"""One naming scheme for experiments and runs, used by scripts/make_experiments.py and the default run name.

* architecture tokens are lower case, with no underscore between a family and its depth:
  ``ResNet50`` -> ``resnet50``, ``wrn_40_2`` -> ``wrn40_2``, ``MobileNetV2`` -> ``mobilenetv2``;
* ``teacher_<arch>``, ``vanilla_<arch>``, ``<method>_<pair>`` (a pair is ``<teacher>_<student>``, the
  student's family dropped when it is the teacher's: ``resnet32x4_8x4``, ``wrn40_2_16_2``),
  ``transfer_<method>_<target>``; a dataset other than CIFAR-100 comes first after the role:
  ``teacher_tinyimagenet_resnet18``, ``crd_imagenet_r34_r18``.
"""

from __future__ import annotations

import re

from omegaconf import OmegaConf


def arch_token(arch: str) -> str:
    """``ResNet50`` -> ``resnet50``; ``wrn_40_2`` -> ``wrn40_2``; ``timm/convnext_tiny`` -> ``convnext_tiny``."""
    token = arch.removeprefix("timm/").lower()
    return re.sub(r"^([a-z]+)_(\d)", r"\1\2", token)


def default_run_name(role: str, distiller: str, teacher: str, student: str) -> str:
    """The name of a run that no experiment names: what it trains, in the experiments' scheme."""
    if role == "teacher":
        return f"custom_teacher_{arch_token(teacher)}"
    if role == "eval":
        return f"custom_eval_{arch_token(student)}"
    if distiller in ("none", "None", ""):
        return f"custom_vanilla_{arch_token(student)}"
    return f"custom_{distiller}_{arch_token(teacher)}_{arch_token(student)}"


# Registered on import (the package imports this module), so every compose of the configs resolves it.
OmegaConf.register_new_resolver("distillbench.run_name", default_run_name, replace=True)
