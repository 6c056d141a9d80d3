"""One naming scheme for every experiment and for the runs no experiment names."""

from __future__ import annotations

import re

import pytest
import yaml

from distillbench.naming import arch_token, default_run_name
from tests.helpers import CONFIG_DIR, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
DATASETS = ("imagenet", "tinyimagenet")


def test_every_experiment_name_is_lower_case_and_is_its_file_name():
    for name in EXPERIMENTS:
        assert re.fullmatch(r"[a-z0-9_]+", name), name
        declared = yaml.safe_load((CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()).get("name")
        assert declared == name, f"{name}.yaml names its runs {declared}"


def test_teachers_and_vanilla_students_are_named_by_their_arch_token():
    for name in EXPERIMENTS:
        role, _, rest = name.partition("_")
        if role not in ("teacher", "vanilla"):
            continue
        arch = yaml.safe_load((CONFIG_DIR / "experiment" / f"{name}.yaml").read_text())
        dataset = next((d for d in DATASETS if rest.startswith(d + "_")), None)
        token = rest.removeprefix(f"{dataset}_") if dataset else rest
        # the arch the experiment trains is the teacher for teacher_*, the student for vanilla_*
        overrides = arch.get("defaults", [])
        picked = [o for o in overrides if isinstance(o, dict)]
        chosen = {k.split("/")[-1]: v for o in picked for k, v in o.items()}
        if "teacher" in chosen and role == "teacher" and not dataset:
            assert token == arch_token(chosen["teacher"]), name
        if "student" in chosen and role == "vanilla" and not dataset:
            assert token == arch_token(chosen["student"]), name


@pytest.mark.parametrize(("arch", "token"), [("ResNet50", "resnet50"), ("wrn_40_2", "wrn40_2"),
                                              ("MobileNetV2", "mobilenetv2"), ("resnet32x4", "resnet32x4"),
                                              ("timm/convnext_tiny", "convnext_tiny")])
def test_arch_tokens(arch, token):
    assert arch_token(arch) == token


def test_a_run_no_experiment_names_says_what_it_trains():
    assert compose_config(["role=teacher", "teacher=wrn_40_2"]).name == "custom_teacher_wrn40_2"
    assert compose_config(["distiller=none", "student=MobileNetV2"]).name == "custom_vanilla_mobilenetv2"
    assert compose_config(["distiller=crd"]).name == "custom_crd_resnet32x4_resnet8x4"
    assert default_run_name("eval", "none", "resnet56", "resnet20") == "custom_eval_resnet20"
    assert compose_config(["experiment=crd_resnet32x4_8x4"]).name == "crd_resnet32x4_8x4"
