"""Multirun sweeps end to end on generated CIFAR-100: glob over experiments, seeds, launchers, Optuna."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from distillbench.identity import variant_name
from distillbench.models import create_model
from tests.helpers import tiny_run_overrides


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "resnet8.pth"
    torch.manual_seed(0)
    torch.save({"model": create_model("resnet8").state_dict()}, path)
    return path


def multirun(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "distillbench", "-m", *args], capture_output=True, text=True,
                            timeout=600, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def small(root: Path, runs: Path, teacher: Path) -> list[str]:
    return [*tiny_run_overrides(root, runs), "teacher=resnet8", "student=resnet8", f"teacher.checkpoint={teacher}",
            "trainer.epochs=1"]


@pytest.mark.slow  # a whole command in its own process(es); CI runs it (pytest -m slow)
def test_glob_and_seeds_with_the_joblib_launcher_give_one_directory_per_run(fake_cifar_root, teacher, tmp_path):
    runs = tmp_path / "runs"
    multirun("experiment=glob([kd_resnet32x4_8x4,at_resnet32x4_8x4])", "seed=0,1", "hydra/launcher=joblib",
             "hydra.launcher.n_jobs=2", *small(fake_cifar_root, runs, teacher), cwd=tmp_path)
    summaries = sorted(p.relative_to(runs).as_posix() for p in runs.rglob("summary.json"))
    variant = variant_name(small(fake_cifar_root, runs, teacher))
    assert summaries == [f"{name}/{variant}/seed{seed}/summary.json"
                         for name in ("at_resnet32x4_8x4", "kd_resnet32x4_8x4") for seed in (0, 1)]
    assert len(list((runs / "sweeps").glob("*/multirun.yaml"))) == 1
    seeds = {json.loads((runs / s).read_text())["seed"] for s in summaries}
    assert seeds == {0, 1}


@pytest.mark.slow  # SLURM's code path through submitit's local executor; CI runs it
def test_submitit_local_executor_runs_each_job(fake_cifar_root, teacher, tmp_path):
    runs = tmp_path / "runs"
    multirun("experiment=kd_resnet32x4_8x4", "seed=3,4", "hydra/launcher=submitit_local",
             "hydra.launcher.timeout_min=10", *small(fake_cifar_root, runs, teacher), cwd=tmp_path)
    variant = variant_name(small(fake_cifar_root, runs, teacher))
    for seed in (3, 4):
        summary = json.loads((runs / "kd_resnet32x4_8x4" / variant / f"seed{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed


@pytest.mark.slow  # a whole command in its own process(es); CI runs it (pytest -m slow)
def test_optuna_tunes_the_weight_on_held_out_training_images(fake_cifar_root, teacher, tmp_path):
    runs = tmp_path / "runs"
    output = multirun("experiment=kd_resnet32x4_8x4", "hparams_search=weight_optuna", "hydra.sweeper.n_trials=2",
                      *small(fake_cifar_root, runs, teacher), cwd=tmp_path)
    trials = sorted((runs / "tune" / "kd_resnet32x4_8x4").glob("*/trial*/summary.json"))
    assert len(trials) == 2
    summaries = [json.loads(p.read_text()) for p in trials]
    assert all(s["eval_split"] == "holdout" for s in summaries)
    configs = [OmegaConf.load(p.parent / "config.yaml") for p in trials]
    assert configs[0].distiller.method.weight != configs[1].distiller.method.weight
    assert all(c.dataset.holdout.fraction == 0.1 and c.dataset.holdout.seed == 0 for c in configs)
    assert "Best parameters" in output and "distiller.method.weight" in output


@pytest.mark.slow  # one CRD+KD trial in its own process: 10-16 s on two CPU cores
def test_optuna_tunes_the_contrastive_weight_of_a_combined_method(fake_cifar_root, teacher, tmp_path):
    """CRD+KD keeps its CRD weight at distiller.method.crd.weight (configs/distiller/crd_kd.yaml: tune_weight)."""
    runs = tmp_path / "runs"
    output = multirun("experiment=crd_kd_resnet32x4_8x4", "hparams_search=weight_optuna", "hydra.sweeper.n_trials=1",
                      "distiller.method.crd.num_negatives=16", *small(fake_cifar_root, runs, teacher), cwd=tmp_path)
    (trial,) = (runs / "tune" / "crd_kd_resnet32x4_8x4").glob("*/trial0")
    config = OmegaConf.load(trial / "config.yaml")
    assert 0.05 <= config.distiller.method.crd.weight <= 20.0 and config.distiller.method.crd.weight != 0.8
    assert config.distiller.method.kd.weight == 1.0 and "weight" not in config.distiller.method
    # Scored on held-out training images, and labelled so in the summary, the run record and the console.
    assert json.loads((trial / "summary.json").read_text())["eval_split"] == "holdout"
    assert json.loads((trial / "run.json").read_text())["data"]["eval_split"] == "holdout"
    assert "holdout_acc1=" in output and "test_acc1=" not in output
    assert "Best parameters: {'distiller.method.crd.weight'" in output
