"""A run directory holds one identity, ever, and one writer at a time; a refused command changes nothing."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from pathlib import Path

import pytest

from distillbench.errors import ResumeMismatchError, RunDirError
from distillbench.rundir import (
    CONFIG_FILE,
    LOCK_FILE,
    RECORD_FILE,
    SESSIONS_FILE,
    FinishedRun,
    RunLock,
    RunPlan,
    claim_run_dir,
    read_record,
)

CONFIG = {"optim": {"lr": 0.1}, "dataset": {"batch_size": 64, "num_workers": 4}, "seed": 0, "name": "exp"}


def plan(run_dir: Path, lr: float = 0.1, workers: int = 4, precision: str = "float32") -> RunPlan:
    config = {**CONFIG, "optim": {"lr": lr}, "dataset": {"batch_size": 64, "num_workers": workers}}
    return RunPlan(run_dir=run_dir, experiment="exp", variant="default", seed=0, config=config,
                   resolved={"trainer.precision": precision}, overrides=[f"optim.lr={lr}"])


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.md5(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_run_records_its_identity_config_and_session(tmp_path):
    run = plan(tmp_path / "run")
    lock = claim_run_dir(run, resume=False, overwrite=False)
    assert (tmp_path / "run" / LOCK_FILE).exists()
    lock.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    record = read_record(tmp_path / "run")
    assert record["identity"] == run.identity and record["group"] == run.group
    assert record["identity_fields"]["optim.lr"] == 0.1 and record["identity_fields"]["trainer.precision"] == "float32"
    assert "dataset.num_workers" not in record["identity_fields"]
    assert {"torch", "cuda", "cudnn", "git_commit", "git_dirty", "host", "distillbench"} <= set(record["environment"])
    assert (tmp_path / "run" / CONFIG_FILE).read_text().startswith("optim:")
    assert json.loads((tmp_path / "run" / SESSIONS_FILE).read_text())["resume"] is False


def test_resume_with_another_identity_lists_the_differences_and_changes_nothing(tmp_path):
    claim_run_dir(plan(tmp_path / "run"), resume=False, overwrite=False).release()
    before = snapshot(tmp_path / "run")
    with pytest.raises(ResumeMismatchError) as err:
        claim_run_dir(plan(tmp_path / "run", lr=0.2, precision="bf16"), resume=True, overwrite=False)
    message = str(err.value)
    assert "optim.lr: 0.1 -> 0.2" in message and "trainer.precision: float32 -> bf16" in message
    assert "Nothing was changed" in message
    assert snapshot(tmp_path / "run") == before
    # What cannot change the result may change between sessions; the session log records it.
    claim_run_dir(plan(tmp_path / "run", workers=0), resume=True, overwrite=False).release()
    sessions = (tmp_path / "run" / SESSIONS_FILE).read_text().splitlines()
    assert [json.loads(s)["resume"] for s in sessions] == [False, True]


def test_a_finished_or_unfinished_run_is_never_silently_reused(tmp_path):
    run_dir = tmp_path / "run"
    claim_run_dir(plan(run_dir), resume=False, overwrite=False).release()
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
    with pytest.raises(RunDirError, match="resume=true"):
        claim_run_dir(plan(run_dir), resume=False, overwrite=False)
    (run_dir / "summary.json").write_text("{}")
    with pytest.raises(RunDirError, match="finished run"):
        claim_run_dir(plan(run_dir), resume=False, overwrite=False)
    # resume=true of the same finished run (a SLURM requeue after the end): reported, not trained again
    with pytest.raises(FinishedRun):
        claim_run_dir(plan(run_dir), resume=True, overwrite=False)
    (run_dir / "run.json").unlink()  # finished, without checkpoints, and whose config it was is unknown
    (run_dir / "checkpoints" / "last.pt").unlink()
    with pytest.raises(RunDirError, match="nothing to resume"):
        claim_run_dir(plan(run_dir), resume=True, overwrite=False)


def test_checkpoints_without_a_record_are_not_resumed(tmp_path):
    run_dir = tmp_path / "old"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
    before = snapshot(run_dir)
    with pytest.raises(RunDirError, match="no run record"):
        claim_run_dir(plan(run_dir), resume=True, overwrite=False)
    assert snapshot(run_dir) == before


def test_overwrite_replaces_the_old_run_only_when_claimed(tmp_path):
    run_dir = tmp_path / "run"
    claim_run_dir(plan(run_dir), resume=False, overwrite=False).release()
    (run_dir / "summary.json").write_text("{}")
    (run_dir / "checkpoints").mkdir()
    claim_run_dir(plan(run_dir, lr=0.3), resume=False, overwrite=True).release()
    assert not (run_dir / "summary.json").exists() and not (run_dir / "checkpoints").exists()
    assert read_record(run_dir)["identity_fields"]["optim.lr"] == 0.3


def _hold_lock(run_dir: str, ready, release) -> None:
    lock = RunLock(Path(run_dir)).acquire()
    ready.set()
    release.wait(30)
    lock.release()


def test_a_second_writer_is_refused_while_the_first_holds_the_directory(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(run_dir), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(RunDirError) as err:
            claim_run_dir(plan(run_dir), resume=False, overwrite=False)
        assert f"pid {holder.pid}" in str(err.value) and "Another process is writing" in str(err.value)
        assert not (run_dir / RECORD_FILE).exists()
    finally:
        release.set()
        holder.join(30)
    claim_run_dir(plan(run_dir), resume=False, overwrite=False).release()


def test_a_stale_lock_of_a_dead_process_is_explained_and_taken_over(tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # A process killed while it held the directory leaves the file; the kernel has dropped its flock.
    (run_dir / LOCK_FILE).write_text(json.dumps({"host": "node7", "pid": 4242, "since": "2026-01-01T00:00:00"}))
    with caplog.at_level(logging.WARNING, logger="distillbench"):
        lock = claim_run_dir(plan(run_dir), resume=False, overwrite=False)
    assert "stale lock" in caplog.text and "pid 4242 on node7" in caplog.text
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_finished_run_of_the_same_identity_is_reported_and_another_identity_refused(tmp_path):
    run_dir = tmp_path / "run"
    claim_run_dir(plan(run_dir), resume=False, overwrite=False).release()
    (run_dir / "summary.json").write_text('{"acc1_last": 71.5}')
    before = snapshot(run_dir)
    with pytest.raises(FinishedRun) as done:
        claim_run_dir(plan(run_dir, workers=0), resume=False, overwrite=False)  # workers do not change the result
    assert done.value.summary == {"acc1_last": 71.5} and done.value.identity == plan(run_dir).identity
    assert "overwrite=true" in str(done.value) and "another seed" in str(done.value)
    with pytest.raises(ResumeMismatchError, match="optim.lr: 0.1 -> 0.2"):
        claim_run_dir(plan(run_dir, lr=0.2), resume=False, overwrite=False)
    assert snapshot(run_dir) == before
