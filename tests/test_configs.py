"""Every config file composes, and the recipe is written in the configs as the papers use it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from distillbench.models import list_models
from tests.conftest import CONFIG_DIR, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
GROUPS = ["dataset", "teacher", "student", "distiller", "optim", "sched", "trainer", "logger", "paths", "model"]


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}"], run_dir=tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["name"] == experiment
    assert resolved["teacher"]["arch"] in list_models()
    assert resolved["student"]["arch"] in list_models()
    optimizer = instantiate(cfg.optim)
    scheduler = instantiate(cfg.sched)
    assert callable(optimizer) and callable(scheduler)
    if cfg.distiller.method is not None:
        assert instantiate(cfg.distiller.method) is not None


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in GROUPS if g != "model" for o in group_options(g)],
)
def test_every_group_option_composes(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], run_dir=tmp_path)
    OmegaConf.to_container(cfg, resolve=True)


def test_model_configs_cover_the_zoo():
    assert group_options("model") == list_models()
    assert group_options("student") == list_models()
    assert group_options("teacher") == list_models()


def test_repdistiller_recipe_is_in_the_configs(tmp_path):
    cfg = compose_config(["experiment=kd_resnet32x4_8x4"], run_dir=tmp_path)
    assert cfg.trainer.epochs == 240
    assert cfg.dataset.batch_size == 64 and cfg.dataset.test_batch_size == 32
    assert cfg.optim.lr == 0.05 and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4
    assert list(cfg.sched.milestones) == [150, 180, 210] and cfg.sched.gamma == 0.1
    assert cfg.distiller.ce_weight == 0.1
    assert cfg.distiller.method.weight == 0.9 and cfg.distiller.method.temperature == 4.0
    assert cfg.published.acc1 == 73.33


@pytest.mark.parametrize("arch", ["MobileNetV2", "ShuffleV1", "ShuffleV2"])
def test_light_students_get_lr_001_from_their_config(arch, tmp_path):
    cfg = compose_config([f"student={arch}"], run_dir=tmp_path)
    assert cfg.optim.lr == 0.01


def test_teacher_experiments_train_the_teacher_with_its_lr(tmp_path):
    cfg = compose_config(["experiment=teacher_resnet56"], run_dir=tmp_path)
    assert cfg.role == "teacher" and cfg.teacher.arch == "resnet56"
    assert cfg.optim.lr == cfg.teacher.lr == 0.05
    assert cfg.distiller.method is None


def test_cli_prints_the_composed_config():
    out = subprocess.run(
        [sys.executable, "-m", "distillbench", "experiment=kd_resnet32x4_8x4", "--cfg", "job"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    cfg = OmegaConf.create(out)
    assert cfg.teacher.arch == "resnet32x4" and cfg.student.arch == "resnet8x4"
    assert cfg.distiller.name == "kd"
