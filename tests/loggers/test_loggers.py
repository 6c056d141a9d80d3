"""Loggers: the local files, the console line, and what W&B is given."""

from __future__ import annotations

import json
import logging

import pytest
import wandb

from distillbench.loggers import FileLogger, LoggerGroup, RunInfo, WandbLogger, read_metrics
from distillbench.loggers.wandb_logger import offline_notice, resolve_mode, why_offline


def info(tmp_path) -> RunInfo:
    return RunInfo(name="kd_resnet32x4_8x4", job_type="student", run_dir=str(tmp_path), seed=3,
                   config={"trainer": {"epochs": 2}, "distiller": {"name": "kd"}},
                   tags={"method": "kd", "teacher": "resnet32x4", "student": "resnet8x4", "dataset": "cifar100"})


def epoch(n: int) -> dict:
    return {"epoch": n, "lr": 0.05, "train/loss": 1.0, "train/loss_ce": 1.0, "train/acc1": 1.0,
            "test/acc1": 2.0 * n, "test/acc5": 3.0, "time/epoch_s": 1.0, "time/images_per_s": 5.0}


def test_file_logger_writes_jsonl_and_summary_and_trims_on_resume(tmp_path):
    logger = FileLogger()
    logger.start(info(tmp_path))
    for n in (1, 2, 3):
        logger.log_epoch(epoch(n))
    logger.log_summary({"acc1_last": 6.0})
    assert [m["epoch"] for m in read_metrics(tmp_path)] == [1, 2, 3]
    assert json.loads((tmp_path / "summary.json").read_text()) == {"acc1_last": 6.0}

    # A run killed after logging epoch 3 but before its checkpoint resumes from epoch 2.
    resumed = FileLogger()
    resumed.start(info(tmp_path), resume_state={"epoch": 2})
    assert [m["epoch"] for m in read_metrics(tmp_path)] == [1, 2]


def test_auto_mode_is_offline_without_a_key_and_online_with_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("disabled") == "disabled"
    with pytest.raises(ValueError, match="offline"):
        resolve_mode("sometimes")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"
    assert resolve_mode("offline") == "offline"  # an explicit config value wins


def test_wandb_gets_config_group_job_type_tags_and_epoch_step(tmp_path, monkeypatch, caplog, capfd):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.chdir(tmp_path)
    calls = {}
    real_init = wandb.init

    def recording_init(**kwargs):
        calls.update(kwargs)
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", recording_init)
    run_dir = tmp_path / "runs" / "kd_resnet32x4_8x4" / "default" / "seed3"
    logger = WandbLogger(project="distillbench-tests", mode="offline", root="runs")
    group = LoggerGroup([logger])
    with caplog.at_level(logging.INFO, logger="distillbench"):
        group.start(info(run_dir))
    group.log_epoch(epoch(1))
    group.log_summary({"acc1_last": 2.0, "acc1_best": 2.0})
    state = group.state_dict()
    group.finish()

    assert calls["config"] == info(run_dir).config
    assert calls["group"] == "kd_resnet32x4_8x4/default"  # no identity in this RunInfo
    assert calls["name"] == "kd_resnet32x4_8x4-seed3"
    assert calls["job_type"] == "student"
    assert set(calls["tags"]) == {"method:kd", "teacher:resnet32x4", "student:resnet8x4", "dataset:cifar100"}
    assert calls["mode"] == "offline"
    assert state["WandbLogger"]["run_id"] == calls["id"]
    assert logger.run is None  # finished
    # Offline runs of every experiment share one folder under runs/, none lands in a run directory.
    (offline,) = (tmp_path / "runs" / "wandb").glob(f"offline-run-*-{calls['id']}")
    assert not run_dir.exists()
    # One line says where the run is and how to upload it; W&B itself prints nothing.
    notices = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    folder = f"runs/wandb/{offline.name}"
    assert notices == [f"W&B is offline (logger.wandb.mode=offline): this run is saved in {folder}; upload it with "
                       f"`wandb sync {folder}`"]
    printed = capfd.readouterr()
    assert "wandb" not in printed.out + printed.err

    # Resuming passes the same id back, so W&B continues the same run.
    resumed = WandbLogger(project="distillbench-tests", mode="offline", root="runs")
    resumed.start(info(run_dir), resume_state=state["WandbLogger"])
    resumed.finish()
    assert calls["id"] == state["WandbLogger"]["run_id"] and calls["resume"] == "allow"


def test_offline_is_explained_by_what_made_it_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert why_offline("auto").startswith("no W&B API key is configured; `wandb login`")
    assert why_offline("offline") == "logger.wandb.mode=offline"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert why_offline("auto") == "WANDB_MODE=offline"
    monkeypatch.chdir(tmp_path)
    assert offline_notice(tmp_path / "runs" / "wandb" / "offline-run-1", "x").endswith(
        "saved in runs/wandb/offline-run-1; upload it with `wandb sync runs/wandb/offline-run-1`")
    assert f"`wandb sync {tmp_path.parent}/elsewhere`" in offline_notice(tmp_path.parent / "elsewhere", "x")


def test_wandb_names_runs_by_job_variant_and_seed_and_groups_them_by_identity(tmp_path):
    from distillbench.loggers.wandb_logger import group_name, run_name

    run = info(tmp_path)
    run.variant, run.group = "optim.lr=0.1", "0123456789abcdef"
    assert run_name(run) == "kd_resnet32x4_8x4[optim.lr=0.1]-seed3"
    assert group_name(run) == "kd_resnet32x4_8x4/optim.lr=0.1/0123456789abcdef"
    run.variant = "x" * 200  # capped at W&B's 128 characters, the identity kept whole
    assert len(group_name(run)) == 128 and group_name(run).endswith("/0123456789abcdef")
    # The jobs of one experiment (the quickstart's teacher, vanilla and kd) are runs and groups of their own.
    quick = RunInfo(name="quickstart", job_type="student", run_dir=str(tmp_path), seed=0, job="kd", group="fedcba")
    assert run_name(quick) == "quickstart/kd-seed0"
    assert group_name(quick) == "quickstart/kd/default/fedcba"


def test_wandb_errors_surface(tmp_path, monkeypatch):
    def failing_init(**kwargs):
        raise wandb.errors.CommError("no route to host")

    monkeypatch.setattr(wandb, "init", failing_init)
    with pytest.raises(wandb.errors.CommError):
        WandbLogger(mode="online", root=tmp_path).start(info(tmp_path))
