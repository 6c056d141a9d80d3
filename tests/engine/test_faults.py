"""Killing a run at any moment loses nothing: SIGKILL mid-epoch, SIGTERM/SIGUSR1 from a scheduler.

Each run is a real ``python -m distillbench`` subprocess on generated CIFAR-100; the resumed run
must end with exactly the weights and metrics of an uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distillbench.data import write_fake_cifar100
from distillbench.loggers import read_metrics
from tests.helpers import tiny_run_overrides

TIMING_KEYS = ("time/epoch_s", "time/images_per_s")


def command(root: Path, runs: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "distillbench", "experiment=teacher_resnet56", "teacher=resnet8", "trainer.epochs=2",
        *tiny_run_overrides(root, runs), "dataset.batch_size=8", "hydra.run.dir=" + str(runs / "run"), *extra,
    ]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar_faults")
    write_fake_cifar100(root, n_train=512, n_test=64, seed=1)
    return root


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("straight")
    subprocess.run(command(data_root, runs), check=True, capture_output=True, timeout=300)
    return runs / "run"


def wait_for_checkpoint(process: subprocess.Popen, checkpoint: Path, epoch: int, min_step: int) -> dict:
    """Poll until the run has saved a checkpoint at (epoch, >= min_step)."""
    seen = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        try:  # last.pt is briefly absent while a new checkpoint replaces it
            mtime = checkpoint.stat().st_mtime_ns
            if mtime != seen:
                seen = mtime
                state = torch.load(checkpoint, weights_only=True, map_location="cpu")
                if (state["epoch"], state["step"]) >= (epoch, min_step):
                    return state
        except (EOFError, RuntimeError, FileNotFoundError):
            pass
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared in time")


def assert_same_result(resumed: Path, straight: Path) -> None:
    a, b = read_metrics(resumed), read_metrics(straight)
    assert [m["epoch"] for m in a] == [1, 2]
    for ma, mb in zip(a, b, strict=True):
        assert {k: v for k, v in ma.items() if k not in TIMING_KEYS} == {
            k: v for k, v in mb.items() if k not in TIMING_KEYS}
    wa = torch.load(resumed / "model.pth", weights_only=True)["model"]
    wb = torch.load(straight / "model.pth", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


@pytest.mark.slow  # a whole command in its own process(es); CI runs it (pytest -m slow)
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(data_root, uninterrupted, tmp_path):
    cmd = command(data_root, tmp_path, "trainer.checkpoint_every_steps=5")
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        state = wait_for_checkpoint(process, tmp_path / "run" / "checkpoints" / "last.pt", epoch=1, min_step=5)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert state["epoch"] == 1 and state["step"] > 0  # killed inside epoch 2
    assert not (tmp_path / "run" / "summary.json").exists()

    resumed = subprocess.run([*cmd, "resume=true"], check=True, capture_output=True, text=True, timeout=300)
    assert "stale lock" in resumed.stdout  # the killed process could not release the run directory
    assert_same_result(tmp_path / "run", uninterrupted)


@pytest.mark.slow  # a whole command in its own process(es); CI runs it (pytest -m slow)
def test_killed_by_the_fault_switch_during_a_checkpoint_rotation_then_resume_equals_uninterrupted(
        data_root, uninterrupted, tmp_path):
    cmd = command(data_root, tmp_path)
    env = {**os.environ, "DISTILLBENCH_FAULT": "rotate:1"}  # the first rotation: the end of epoch 2
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert killed.returncode == 137
    subprocess.run([*cmd, "resume=true"], check=True, capture_output=True, timeout=300)
    assert_same_result(tmp_path / "run", uninterrupted)


@pytest.mark.slow  # a whole command in its own process(es); CI runs it (pytest -m slow)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1],
                         ids=["SIGTERM", "SIGUSR1"])
def test_scheduler_signal_saves_and_exits_then_resumes_exactly(signum, data_root, uninterrupted, tmp_path):
    cmd = command(data_root, tmp_path)
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_checkpoint(process, tmp_path / "run" / "checkpoints" / "last.pt", epoch=1, min_step=0)
        process.send_signal(signum)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signum
    assert "resume=true" in output and signal.Signals(signum).name in output
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) >= (1, 0)

    subprocess.run([*cmd, "resume=true"], check=True, capture_output=True, timeout=300)
    assert_same_result(tmp_path / "run", uninterrupted)
