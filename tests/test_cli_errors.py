"""Mistakes a user can make end in one clear paragraph, exit code 1 and no traceback."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import tiny_run_overrides


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    """Run the command line; ``output`` is stdout and stderr together (Hydra logs to stdout)."""
    result = subprocess.run(
        [sys.executable, "-m", "distillbench", *args], capture_output=True, text=True, timeout=300, cwd=cwd,
    )
    result.output = result.stdout + result.stderr
    return result


def test_wrong_model_name_lists_the_valid_ones(fake_cifar_root, tmp_path):
    result = run_cli("experiment=kd_resnet32x4_8x4", "student.arch=resnet9000", "trainer.epochs=1",
                     "teacher.checkpoint=unused.pth", "distiller=none",
                     *tiny_run_overrides(fake_cifar_root, tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 1
    assert "Unknown model 'resnet9000'" in result.output
    assert "resnet32x4" in result.output and "ShuffleV2" in result.output
    assert "Traceback" not in result.output


def test_missing_dataset_says_where_the_files_must_be(tmp_path):
    result = run_cli("experiment=teacher_resnet56", f"dataset.root={tmp_path / 'nowhere'}", "trainer.device=cpu",
                     f"paths.runs={tmp_path / 'runs'}", "logger.wandb.mode=disabled", cwd=tmp_path)
    assert result.returncode == 1
    assert "cifar-100-python" in result.output
    assert "dataset.download=true" in result.output
    assert "Traceback" not in result.output


def test_missing_teacher_checkpoint_says_how_to_get_one(fake_cifar_root, tmp_path):
    result = run_cli("experiment=kd_resnet32x4_8x4", *tiny_run_overrides(fake_cifar_root, tmp_path / "runs"),
                     cwd=tmp_path)
    assert result.returncode == 1
    assert "experiment=teacher_resnet32x4" in result.output
    assert "teacher.checkpoint=" in result.output
    assert "Traceback" not in result.output


def test_unknown_experiment_lists_the_available_ones(tmp_path):
    result = run_cli("experiment=kd_resnet32x4_9x9", cwd=tmp_path)
    assert result.returncode == 1
    assert "kd_resnet32x4_8x4" in result.output


def test_unknown_distiller_and_dataset_list_the_valid_ones(tmp_path):
    result = run_cli("distiller=kd_plus", cwd=tmp_path)
    assert result.returncode == 1
    assert "kd_plus" in result.output and "Available options" in result.output and "kd" in result.output
    result = run_cli("dataset=cifar1000", cwd=tmp_path)
    assert result.returncode == 1
    assert "cifar100" in result.output and "digits" in result.output
