"""``python -m distillbench.eval``: any checkpoint scored on the test split, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from distillbench.data import build_cifar100
from distillbench.engine.evaluation import evaluate
from distillbench.eval import evaluate_checkpoint, main
from distillbench.models import create_model
from distillbench.weights import CheckpointError
from tests.helpers import compose_config, tiny_run_overrides


@pytest.fixture(scope="module")
def resnet8(fake_cifar_root):
    """A resnet8 and its scores on the generated test split, computed directly."""
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=100)
    _, test = build_cifar100(fake_cifar_root, verify_checksums=False)
    loader = torch.utils.data.DataLoader(test, batch_size=64)
    return model, evaluate(model, loader, "cpu")


def eval_config(root, tmp_path, *overrides):
    return compose_config([*overrides, *tiny_run_overrides(root, tmp_path / "runs")])


def test_every_checkpoint_format_scores_as_the_model_itself_and_nothing_is_written(resnet8, fake_cifar_root,
                                                                                    tmp_path):
    model, expected = resnet8
    state = model.state_dict()
    files = {
        "distillbench": {"model": state, "acc1": 1.0, "epoch": 3, "arch": "resnet8"},  # model.pth, model_best.pth
        "repdistiller": {"model": state, "epoch": 240, "best_acc": 0.0},  # ckpt_epoch_240.pth
        "dataparallel": {"model": {f"module.{k}": v for k, v in state.items()}},
        "bare": state,
    }
    for name, content in files.items():
        torch.save(content, tmp_path / f"{name}.pth")
    before = sorted(p.name for p in tmp_path.iterdir())
    student = eval_config(fake_cifar_root, tmp_path, "experiment=kd_resnet32x4_8x4", "student=resnet8")
    teacher = eval_config(fake_cifar_root, tmp_path, "experiment=teacher_resnet56", "teacher=resnet8")
    override = eval_config(fake_cifar_root, tmp_path, "experiment=kd_resnet32x4_8x4")
    for name in files:
        for cfg, arch in ((student, None), (teacher, None), (override, "resnet8")):
            result = evaluate_checkpoint(cfg, tmp_path / f"{name}.pth", arch)
            assert result["arch"] == "resnet8" and result["images"] == 64, name
            for key in ("acc1", "acc5", "loss"):
                assert result[key] == pytest.approx(expected[key], abs=1e-4), (name, key)
    assert evaluate_checkpoint(student, tmp_path / "distillbench.pth")["recorded_epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run directory, no runs/ folder


def test_a_missing_file_or_another_architecture_is_one_paragraph_and_exit_code_2(resnet8, fake_cifar_root,
                                                                                   tmp_path, caplog):
    model, _ = resnet8
    torch.save({"model": model.state_dict(), "acc1": 1.0, "epoch": 1, "arch": "resnet8"}, tmp_path / "model.pth")
    cfg = eval_config(fake_cifar_root, tmp_path, "experiment=kd_resnet32x4_8x4")
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate_checkpoint(cfg, tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match=r"does not fit architecture 'resnet8x4'.*pass arch=resnet8"):
        evaluate_checkpoint(cfg, tmp_path / "model.pth")
    digits = compose_config(["experiment=kd_resnet32x4_8x4", "dataset=digits", "trainer.device=cpu"])
    with pytest.raises(CheckpointError, match=r"10 classes.*fc\.weight: checkpoint \(100, 64\) vs model \(10, 64\)"):
        evaluate_checkpoint(digits, tmp_path / "model.pth", "resnet8")
    for argv in (["experiment=kd_resnet32x4_8x4"], ["experiment=kd_nope", f"checkpoint={tmp_path / 'model.pth'}"],
                 ["experiment=kd_resnet32x4_8x4", f"checkpoint={tmp_path / 'model.pth'}", "trainer.device=cpu",
                  f"dataset.root={fake_cifar_root}", "dataset.verify_checksums=false"]):
        caplog.clear()
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
        assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1, argv


def test_the_command_line_prints_top1_top5_and_loss(resnet8, fake_cifar_root, tmp_path):
    model, expected = resnet8
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt_epoch_240.pth")
    result = subprocess.run(
        [sys.executable, "-m", "distillbench.eval", "experiment=kd_resnet32x4_8x4", "arch=resnet8",
         f"checkpoint={tmp_path / 'ckpt_epoch_240.pth'}", *tiny_run_overrides(fake_cifar_root, tmp_path / "runs")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"top-1 {expected['acc1']:.2f}  top-5 {expected['acc5']:.2f}" in result.stdout
    assert "resnet8 on cifar100 test (64 images)" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_epoch_240.pth"]
