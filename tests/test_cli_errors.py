"""Mistakes a user can make end in one clear paragraph, no traceback, and exit code 2 (distillbench's own
checks) or 1 (Hydra's, for names that do not compose)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from distillbench.build import build_trainer
from distillbench.cli import check_experiment_name
from distillbench.errors import ConfigError, UserError
from distillbench.models import create_model
from tests.helpers import compose_config, tiny_run_overrides


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    """Run the command line; ``output`` is stdout and stderr together (Hydra logs to stdout)."""
    result = subprocess.run(
        [sys.executable, "-m", "distillbench", *args], capture_output=True, text=True, timeout=300, cwd=cwd,
    )
    result.output = result.stdout + result.stderr
    return result


def user_error(*overrides: str, run_dir) -> str:
    """The paragraph the command line would print for ``overrides`` (in-process: the exit code and the absence
    of a traceback are checked once, by a real command line, in the test below)."""
    cfg = compose_config(list(overrides), run_dir=run_dir)
    with pytest.raises(UserError) as err:
        build_trainer(cfg, run_dir)
    return str(err.value)


def test_wrong_model_name_lists_the_valid_ones(fake_cifar_root, tmp_path):
    message = user_error("experiment=kd_resnet32x4_8x4", "student.arch=resnet9000", "trainer.epochs=1",
                         "teacher.checkpoint=unused.pth", "distiller=none",
                         *tiny_run_overrides(fake_cifar_root, tmp_path / "runs"), run_dir=tmp_path / "run")
    assert "Unknown model 'resnet9000'" in message
    assert "resnet32x4" in message and "ShuffleV2" in message


def test_missing_dataset_says_where_the_files_must_be(tmp_path):
    message = user_error("experiment=teacher_resnet56", f"dataset.root={tmp_path / 'nowhere'}", "trainer.device=cpu",
                         f"paths.runs={tmp_path / 'runs'}", "logger.wandb.mode=disabled", run_dir=tmp_path / "run")
    assert "cifar-100-python" in message
    assert "dataset.download=true" in message


def test_missing_teacher_checkpoint_says_how_to_get_one(fake_cifar_root, tmp_path):
    message = user_error("experiment=kd_resnet32x4_8x4", *tiny_run_overrides(fake_cifar_root, tmp_path / "runs"),
                         run_dir=tmp_path / "run")
    assert "experiment=teacher_resnet32x4" in message
    assert "teacher.checkpoint=" in message


def test_a_misspelt_experiment_gets_the_closest_names_in_a_few_lines(tmp_path):
    result = run_cli("experiment=crd_resnet32x4_8x5", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Did you mean crd_resnet32x4_8x4" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_the_closest_names_come_from_the_experiment_folder():
    with pytest.raises(ConfigError, match="no experiment 'kd_resnet32x4_9x9'. Did you mean kd_resnet32x4_8x4"):
        check_experiment_name(["seed=1", "experiment=kd_resnet32x4_9x9"])
    with pytest.raises(ConfigError) as err:
        check_experiment_name(["experiment=zzz"])
    assert "Did you mean" not in str(err.value)
    check_experiment_name(["experiment=kd_resnet32x4_8x4", "experiment=glob(kd_*)", "experiment=kd_a,kd_b"])


@pytest.mark.slow  # a whole command in its own process(es); CI runs it (pytest -m slow)
def test_unknown_distiller_and_dataset_list_the_valid_ones(tmp_path):
    result = run_cli("distiller=kd_plus", cwd=tmp_path)
    assert result.returncode == 1
    assert "kd_plus" in result.output and "Available options" in result.output and "kd" in result.output
    result = run_cli("dataset=cifar1000", cwd=tmp_path)
    assert result.returncode == 1
    assert "cifar100" in result.output and "digits" in result.output


@pytest.mark.parametrize("override, says", [
    ("trainer.epochs=abc", "trainer.epochs='abc' is not valid: it must be a whole number >= 1"),
    ("trainer.epochs=0", "trainer.epochs=0 is not valid"),
    ("dataset.batch_size=0", "dataset.batch_size=0 is not valid"),
    ("dataset.batch_size=-1", "dataset.batch_size=-1 is not valid"),
    ("distiller.method.weight=abc", "distiller.method.weight='abc' is not valid: it must be a number"),
    ("logger.wandb.mode=bogus", "logger.wandb.mode='bogus' is not valid: it must be one of auto, online"),
    ("dataset.loader=gpu", "dataset.loader='gpu' is not valid"),
    ("optim.lr=fast", "optim.lr='fast' is not valid"),
])
def test_out_of_range_or_mistyped_values_are_refused_before_anything_is_built(override, says, tmp_path):
    cfg = compose_config(["experiment=kd_resnet32x4_8x4", override], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        build_trainer(cfg, tmp_path / "run")
    assert says in str(err.value)
    assert not (tmp_path / "run").exists()


def test_a_user_error_is_one_paragraph_with_exit_code_2_and_no_file_written(tmp_path):
    result = run_cli("experiment=kd_resnet32x4_8x4", "trainer.epochs=abc", f"paths.runs={tmp_path / 'runs'}",
                     cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert len(errors) == 1 and "trainer.epochs='abc'" in errors[0]
    assert not any(p.is_file() for p in (tmp_path / "runs").rglob("*"))


def test_a_teacher_trained_for_other_classes_is_a_clear_error(fake_cifar_root, tmp_path):
    teacher = tmp_path / "ten_classes.pth"
    torch.save({"model": create_model("resnet8", num_classes=10).state_dict()}, teacher)
    cfg = compose_config(["experiment=kd_resnet32x4_8x4", "teacher=resnet8", "student=resnet8",
                          f"teacher.checkpoint={teacher}", *tiny_run_overrides(fake_cifar_root, tmp_path / "runs")],
                         run_dir=tmp_path / "run")
    with pytest.raises(UserError) as err:
        build_trainer(cfg, tmp_path / "run")
    assert "100 classes" in str(err.value) and "fc.weight" in str(err.value)
