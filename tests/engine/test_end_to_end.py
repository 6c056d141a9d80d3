"""Whole runs on generated CIFAR-100 files, on the CPU: teacher, KD student, resume."""

from __future__ import annotations

import json

import pytest
import torch

from distillbench.engine.trainer import Trainer
from distillbench.errors import ConfigError, RunDirError
from distillbench.jobs import run_job
from distillbench.loggers import read_metrics
from distillbench.weights import load_file
from tests.helpers import KillAt, compose_config, tiny_run_overrides

EPOCH_KEYS = {
    "epoch", "lr", "train/loss", "train/loss_ce", "train/acc1", "test/acc1", "test/acc5", "test/loss",
    "time/epoch_s", "time/images_per_s",
}


@pytest.fixture(scope="module")
def teacher_checkpoint(fake_cifar_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("teacher_runs")
    cfg = compose_config(
        ["experiment=teacher_resnet56", "teacher=resnet8", "trainer.epochs=1",
         *tiny_run_overrides(fake_cifar_root, runs)],
        run_dir=runs / "teacher",
    )
    summary = run_job(cfg, runs / "teacher")
    assert summary["job_type"] == "teacher" and summary["arch"] == "resnet8"
    return runs / "teacher" / "model.pth"


def kd_config(root, runs, teacher_checkpoint, run_dir, *extra):
    return compose_config(
        ["experiment=kd_resnet32x4_8x4", "teacher=resnet8", "student=resnet8", "trainer.epochs=2",
         f"teacher.checkpoint={teacher_checkpoint}", *tiny_run_overrides(root, runs), *extra],
        run_dir=run_dir,
    )


def test_two_epoch_kd_run_records_everything(fake_cifar_root, teacher_checkpoint, tmp_path):
    run_dir = tmp_path / "kd"
    summary = run_job(kd_config(fake_cifar_root, tmp_path, teacher_checkpoint, run_dir), run_dir)

    metrics = read_metrics(run_dir)
    assert [m["epoch"] for m in metrics] == [1, 2]
    for m in metrics:
        assert EPOCH_KEYS | {"train/loss_kd", "teacher/acc1"} <= set(m)
        assert m["train/loss"] == pytest.approx(m["train/loss_ce"] + m["train/loss_kd"], rel=1e-5)
    assert metrics[0]["lr"] == 0.05

    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary
    assert summary["acc1_last"] == metrics[-1]["test/acc1"]
    assert summary["acc1_best"] == max(m["test/acc1"] for m in metrics)
    assert metrics[summary["best_epoch"] - 1]["test/acc1"] == summary["acc1_best"]
    assert summary["method"] == "kd" and summary["teacher"] == "resnet8"
    assert summary["published_acc1"] == 73.33
    assert 0.0 <= summary["teacher_acc1"] <= 100.0

    checkpoint = load_file(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] == 2
    for key in ("model", "distiller", "optimizer", "scheduler", "rng", "best_acc1", "logger", "seed"):
        assert key in checkpoint
    assert (run_dir / "checkpoints" / "prev.pt").exists()
    assert (run_dir / "config.yaml").exists()


def test_resume_after_epoch_one_equals_an_uninterrupted_run(fake_cifar_root, teacher_checkpoint, tmp_path):
    straight_dir = tmp_path / "straight"
    straight = run_job(kd_config(fake_cifar_root, tmp_path, teacher_checkpoint, straight_dir), straight_dir)

    interrupted_dir = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_job(kd_config(fake_cifar_root, tmp_path, teacher_checkpoint, interrupted_dir), interrupted_dir,
                callbacks=[KillAt("on_epoch_start", 2)])
    assert not (interrupted_dir / "summary.json").exists()

    with pytest.raises(RunDirError, match="resume=true"):
        run_job(kd_config(fake_cifar_root, tmp_path, teacher_checkpoint, interrupted_dir), interrupted_dir)
    resumed = run_job(
        kd_config(fake_cifar_root, tmp_path, teacher_checkpoint, interrupted_dir, "resume=true"), interrupted_dir
    )

    for key in ("acc1_last", "acc1_best", "best_epoch", "acc5_last"):
        assert resumed[key] == straight[key]
    straight_metrics = read_metrics(straight_dir)
    resumed_metrics = read_metrics(interrupted_dir)
    for a, b in zip(straight_metrics, resumed_metrics, strict=True):
        for key in ("train/loss", "train/loss_kd", "train/acc1", "test/acc1", "test/loss", "lr"):
            assert a[key] == b[key], key
    straight_weights = torch.load(straight_dir / "model.pth", weights_only=True)["model"]
    resumed_weights = torch.load(interrupted_dir / "model.pth", weights_only=True)["model"]
    for key, value in straight_weights.items():
        assert torch.equal(value, resumed_weights[key]), key


def test_a_finished_run_is_never_overwritten_silently(fake_cifar_root, teacher_checkpoint, tmp_path):
    run_dir = tmp_path / "done"
    cfg = kd_config(fake_cifar_root, tmp_path, teacher_checkpoint, run_dir, "trainer.epochs=1")
    run_job(cfg, run_dir)
    before = (run_dir / "summary.json").read_text()
    with pytest.raises(RunDirError, match="finished run"):
        run_job(cfg, run_dir)
    assert (run_dir / "summary.json").read_text() == before

    # overwrite=true builds the new config before it removes anything: a broken one leaves the old run.
    files = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    broken = kd_config(fake_cifar_root, tmp_path, tmp_path / "no_such_teacher.pth", run_dir, "trainer.epochs=1",
                       "overwrite=true")
    with pytest.raises(ConfigError, match="does not exist"):
        run_job(broken, run_dir)
    assert {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files
    run_job(kd_config(fake_cifar_root, tmp_path, teacher_checkpoint, run_dir, "trainer.epochs=1", "overwrite=true"),
            run_dir)
    assert json.loads((run_dir / "summary.json").read_text())["finished"] is True


def test_the_device_loader_trains_the_same_batches(fake_cifar_root, teacher_checkpoint, tmp_path):
    run_dir = tmp_path / "device"
    summary = run_job(kd_config(fake_cifar_root, tmp_path, teacher_checkpoint, run_dir, "dataset.loader=device",
                                "trainer.epochs=1"), run_dir)
    (metrics,) = read_metrics(run_dir)
    assert summary["acc1_last"] == metrics["test/acc1"]
    assert metrics["time/images_per_s"] > 0 and metrics["train/loss_kd"] > 0


def test_one_seed_gives_the_student_the_same_initial_weights_whatever_the_method(
        fake_cifar_root, teacher_checkpoint, tmp_path, monkeypatch):
    seen = []
    original = Trainer.fit

    def record_initial_weights(self):
        seen.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return original(self)

    monkeypatch.setattr(Trainer, "fit", record_initial_weights)
    for distiller in ("kd", "none"):
        run_dir = tmp_path / distiller
        run_job(kd_config(fake_cifar_root, tmp_path, teacher_checkpoint, run_dir, f"distiller={distiller}",
                          "trainer.epochs=1"), run_dir)
    kd_init, vanilla_init = seen
    assert all(torch.equal(kd_init[k], vanilla_init[k]) for k in kd_init)


def test_an_evaluation_run_records_the_released_networks_accuracy_without_training(fake_cifar_root,
                                                                                  teacher_checkpoint, tmp_path):
    run_dir = tmp_path / "eval"
    cfg = compose_config(["experiment=teacher_resnet56", "role=eval", "teacher=resnet8",
                          f"teacher.checkpoint={teacher_checkpoint}", *tiny_run_overrides(fake_cifar_root, tmp_path)],
                         run_dir=run_dir)
    summary = run_job(cfg, run_dir)
    trained = json.loads((teacher_checkpoint.parent / "summary.json").read_text())
    assert summary["job_type"] == "teacher" and summary["epochs"] == 0 and summary["best_epoch"] == 0
    assert summary["acc1_last"] == summary["acc1_best"] == trained["acc1_last"]  # the same weights, the same test
    assert read_metrics(run_dir) == [] and not (run_dir / "model.pth").exists()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["resolved"]["teacher.weights_sha256"]
