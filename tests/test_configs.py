"""Every config file composes, and the recipe is written in the configs as the papers use it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from distillbench.distillers import Distiller
from distillbench.models import create_model, list_models
from tests.helpers import CONFIG_DIR, REPO_ROOT, compose_config

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from make_experiments import DISTILLERS, PAIRS  # noqa: E402

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# Selectable on the command line; model/ and pair/ are composed by the others.
GROUPS = ["dataset", "teacher", "student", "distiller", "optim", "sched", "trainer", "logger", "paths",
          "hparams_search", "debug"]


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def one_per_method_and_pair() -> list[str]:
    """The first experiment of each method and of each pair (by name): every distiller config and every pair
    config composed, in a few seconds. The slow suite composes and builds them all."""
    chosen, seen = [], set()
    for name in EXPERIMENTS:
        method = next((d for d in sorted(DISTILLERS, key=len, reverse=True) if name.startswith(d + "_")), name)
        pair = name[len(method) + 1:]
        if method not in seen or pair not in seen:
            chosen.append(name)
            seen.update((method, pair))
    return chosen


@pytest.mark.parametrize("experiments", [
    pytest.param(EXPERIMENTS, id="all", marks=pytest.mark.slow),
    pytest.param(one_per_method_and_pair(), id="one_per_method_and_pair"),
])
def test_every_experiment_composes_and_builds_its_models_on_the_cpu(experiments, tmp_path):
    """All experiments in one Hydra context (composing ~300 configs one context each would take minutes)."""
    built: dict[str, int] = {}
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for experiment in experiments:
            cfg = compose(config_name="config", overrides=[f"experiment={experiment}"])
            cfg.run_dir = str(tmp_path)
            resolved = OmegaConf.to_container(cfg, resolve=True)
            assert resolved["name"] == experiment, experiment
            probed = [resolved["probe"]["arch"]] if resolved["role"] == "probe" else []  # linear-probe transfer
            for arch in (resolved["teacher"]["arch"], resolved["student"]["arch"], *probed):
                if arch not in built:
                    model = create_model(arch, num_classes=resolved["dataset"]["num_classes"])
                    built[arch] = sum(p.numel() for p in model.parameters())
            assert callable(instantiate(cfg.optim)) and callable(instantiate(cfg.sched)), experiment
            if cfg.distiller.method is not None:
                assert isinstance(instantiate(cfg.distiller.method), Distiller), experiment
    assert set(built) <= set(list_models())


def test_experiment_files_are_what_the_generator_writes():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "make_experiments.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout


def test_every_table_cell_has_an_experiment_naming_its_published_number():
    published = yaml.safe_load((REPO_ROOT / "results" / "paper" / "published.yaml").read_text())
    pairs = {(t, s): name for name, (t, s) in PAIRS.items()}
    for e in published["entries"]:
        pair = pairs.get((e["teacher"], e["student"]))
        if e["dataset"] != "cifar100" or pair is None or e["top1"] is None or e["method"] not in DISTILLERS:
            continue
        path = CONFIG_DIR / "experiment" / f"{e['method']}_{pair}.yaml"
        assert path.exists(), path.name
        assert yaml.safe_load(path.read_text())["published"]["acc1"] is not None, path.name


def test_every_group_option_composes(tmp_path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for group in GROUPS:
            for option in group_options(group):
                cfg = compose(config_name="config", overrides=[f"{group}={option}"])
                cfg.run_dir = str(tmp_path)
                resolved = OmegaConf.to_container(cfg, resolve=True)
                chosen = {"dataset": ("name",), "teacher": ("arch",), "student": ("arch",), "distiller": ("name",)}
                if group in chosen:
                    assert resolved[group][chosen[group][0]] == option, (group, option)
                if group == "hparams_search":
                    assert resolved["optimized_metric"] and resolved["dataset"]["holdout"]


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
