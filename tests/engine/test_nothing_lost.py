"""Nothing is lost: a crash at any write, a torn metrics line, a corrupt or foreign checkpoint, a full or
read-only disk, a state that diverged. Faults are injected through ``distillbench.faults``, the hook every
write of a run goes through."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest
import torch

from distillbench import faults
from distillbench.build import build_trainer
from distillbench.engine.checkpoint import (
    LAST,
    PREVIOUS,
    NonFiniteStateError,
    load_training_checkpoint,
    save_training_checkpoint,
)
from distillbench.errors import DivergenceError, RunDirError
from distillbench.jobs import run_job
from distillbench.loggers import read_metrics
from tests.helpers import compose_config, tiny_run_overrides


class SimulatedCrash(BaseException):
    """Stands for a kill: not an Exception, so no error handling of the run catches it."""


def teacher_run(root: Path, run_dir: Path, *extra: str):
    return compose_config(["experiment=teacher_resnet56", "teacher=resnet8", "trainer.epochs=2",
                           "trainer.checkpoint_every_steps=2", *tiny_run_overrides(root, run_dir.parent), *extra],
                          run_dir=run_dir)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pth", weights_only=True)["model"]


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(m["epoch"], m["train/loss"]) for m in read_metrics(run_dir)]


@pytest.fixture(scope="module")
def straight(fake_cifar_root, tmp_path_factory):
    """An uninterrupted run and the write points it passes, in order."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    seen = []
    previous = faults.install(lambda point, path: seen.append((point, path.name)))
    try:
        run_job(teacher_run(fake_cifar_root, run_dir), run_dir)
    finally:
        faults.install(previous)
    return run_dir, seen


def test_every_write_of_a_run_passes_a_fault_point(straight):
    _, seen = straight
    names = {name for _, name in seen}
    assert {"config.yaml.tmp", "run.json.tmp", "sessions.jsonl", "metrics.jsonl", "last.pt.tmp", "last.pt",
            "summary.json.tmp", "model.pth.tmp", "model_best.pth.tmp"} <= names
    assert {point for point, _ in seen} == set(faults.POINTS)


def test_a_crash_at_any_write_point_then_resume_ends_as_the_uninterrupted_run(straight, fake_cifar_root,
                                                                               tmp_path):
    reference, seen = straight
    # The first arrival at each kind of write (point x file); later arrivals repeat the same code path.
    firsts = sorted({(point, name): i for i, (point, name) in reversed(list(enumerate(seen)))}.values())
    for crash_at in firsts:
        run_dir = tmp_path / f"crash{crash_at}"
        arrivals = iter(range(len(seen) + 1))

        def crash(point, path, crash_at=crash_at, arrivals=arrivals):
            if next(arrivals) == crash_at:
                raise SimulatedCrash(f"{point} {path.name}")

        previous = faults.install(crash)
        try:
            with pytest.raises(SimulatedCrash):
                run_job(teacher_run(fake_cifar_root, run_dir), run_dir)
        finally:
            faults.install(previous)
        run_job(teacher_run(fake_cifar_root, run_dir, "resume=true"), run_dir)
        where = f"crash at write {crash_at}: {seen[crash_at]}"
        assert losses(run_dir) == losses(reference), where
        ours, theirs = weights(run_dir), weights(reference)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), where


def test_a_full_disk_while_checkpointing_is_one_clear_error_and_the_last_checkpoint_stays(fake_cifar_root,
                                                                                          tmp_path):
    run_dir = tmp_path / "run"
    trainer = build_trainer(teacher_run(fake_cifar_root, run_dir), run_dir)
    count = {"last.pt.tmp": 0}

    def disk_full(point, path):
        if point == "write" and path.name == "last.pt.tmp":
            count["last.pt.tmp"] += 1
            if count["last.pt.tmp"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")

    previous = faults.install(disk_full)
    try:
        with pytest.raises(RunDirError, match="the disk is full") as err:
            trainer.fit()
    finally:
        faults.install(previous)
    assert "resume=true" in str(err.value)
    checkpoints = run_dir / "checkpoints"
    assert not (checkpoints / "last.pt.tmp").exists()
    state = load_training_checkpoint(checkpoints)
    assert (state["epoch"], state["step"]) == (1, 0)  # the second of the two saved so far
    assert not (run_dir / ".lock").exists()


def test_a_read_only_disk_at_the_summary_is_one_clear_error(fake_cifar_root, tmp_path):
    run_dir = tmp_path / "run"

    def read_only(point, path):
        if path.name == "summary.json.tmp":
            raise OSError(errno.EROFS, "Read-only file system")

    previous = faults.install(read_only)
    try:
        with pytest.raises(RunDirError, match="read-only"):
            run_job(teacher_run(fake_cifar_root, run_dir), run_dir)
    finally:
        faults.install(previous)
    assert not (run_dir / "summary.json").exists() and (run_dir / "model.pth").exists()
    run_job(teacher_run(fake_cifar_root, run_dir, "resume=true"), run_dir)  # and the run can finish later
    assert json.loads((run_dir / "summary.json").read_text())["finished"] is True


def test_a_non_finite_state_is_never_written(tmp_path):
    good = {"epoch": 1, "model": {"w": torch.ones(2)}, "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}}}}
    save_training_checkpoint(good, tmp_path)
    for bad, name in (({"bn.running_var": torch.tensor([1.0, float("inf")])}, "model.bn.running_var"),
                      ({"w": torch.tensor([float("nan")])}, "model.w")):
        with pytest.raises(NonFiniteStateError, match=name.replace(".", r"\.")):
            save_training_checkpoint({**good, "epoch": 2, "model": bad}, tmp_path)
    nan_momentum = {**good, "epoch": 2, "optimizer": {"state": {0: {"momentum_buffer": torch.tensor([float("nan")])}}}}
    with pytest.raises(NonFiniteStateError, match=r"optimizer\.state\.0\.momentum_buffer"):
        save_training_checkpoint(nan_momentum, tmp_path)
    assert load_training_checkpoint(tmp_path)["epoch"] == 1
    assert not (tmp_path / PREVIOUS).exists()


def test_divergence_in_the_batchnorm_statistics_stops_the_run_and_keeps_the_last_good_checkpoint(
        fake_cifar_root, tmp_path):
    run_dir = tmp_path / "run"
    trainer = build_trainer(teacher_run(fake_cifar_root, run_dir, "trainer.checkpoint_every_steps=0"), run_dir)

    def poison(step, terms):  # the loss stays finite; the BN statistics do not
        if trainer_epoch() == 2:
            trainer.model.bn1.running_var.fill_(float("inf"))

    def trainer_epoch():
        return len(read_metrics(run_dir)) + 1

    trainer.on_step = poison
    with pytest.raises(DivergenceError) as err:
        trainer.fit()
    message = str(err.value)
    assert "bn1.running_var" in message and "epoch 1" in message and "after epoch 2" in message
    state = load_training_checkpoint(run_dir / "checkpoints")
    assert state["epoch"] == 1 and torch.isfinite(state["model"]["bn1.running_var"]).all()


def test_rotation_never_pushes_a_good_previous_checkpoint_out_with_a_corrupt_one(tmp_path, caplog):
    save_training_checkpoint({"epoch": 1, "w": torch.ones(1)}, tmp_path)
    save_training_checkpoint({"epoch": 2, "w": torch.ones(1)}, tmp_path)
    (tmp_path / LAST).write_bytes(b"truncated")  # a disk fault corrupted the newest one
    with caplog.at_level(logging.WARNING):
        save_training_checkpoint({"epoch": 3, "w": torch.ones(1)}, tmp_path)
    assert "unreadable or not a checkpoint of this run" in caplog.text
    assert torch.load(tmp_path / PREVIOUS, weights_only=True)["epoch"] == 1
    assert load_training_checkpoint(tmp_path)["epoch"] == 3


def test_a_readable_but_foreign_last_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    save_training_checkpoint({"epoch": 1, "identity": "abc", "w": torch.ones(1)}, tmp_path)
    save_training_checkpoint({"epoch": 2, "identity": "abc", "w": torch.ones(1)}, tmp_path)
    # RepDistiller's checkpoints hold an 'epoch' and a 'model' too.
    torch.save({"epoch": 240, "model": {"w": torch.ones(1)}}, tmp_path / LAST)
    with caplog.at_level(logging.WARNING):
        state = load_training_checkpoint(tmp_path, identity="abc")
    assert state["epoch"] == 1 and "not a distillbench training checkpoint of this run" in caplog.text
    save_training_checkpoint({"epoch": 3, "identity": "other", "w": torch.ones(1)}, tmp_path)
    assert load_training_checkpoint(tmp_path, identity="abc")["epoch"] == 1  # another run's file is foreign


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_and_resume_continues(fake_cifar_root, tmp_path,
                                                                                 caplog, straight):
    reference, _ = straight
    run_dir = tmp_path / "run"
    trainer = build_trainer(teacher_run(fake_cifar_root, run_dir), run_dir)
    steps = trainer.steps()
    with trainer.stop:
        for _ in range(6):  # into epoch 2, after its first checkpoint
            next(steps)
    steps.close()
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "lr": 0.0')  # the process died while appending
    with caplog.at_level(logging.WARNING):
        assert [m["epoch"] for m in read_metrics(run_dir)] == [1]
    assert "incomplete" in caplog.text
    run_job(teacher_run(fake_cifar_root, run_dir, "resume=true"), run_dir)
    assert losses(run_dir) == losses(reference)


def test_a_crash_while_resume_rewrites_the_metrics_loses_no_history(fake_cifar_root, tmp_path, straight):
    reference, _ = straight
    run_dir = tmp_path / "run"
    trainer = build_trainer(teacher_run(fake_cifar_root, run_dir), run_dir)
    steps = trainer.steps()
    with trainer.stop:
        for _ in range(7):  # epoch 1 logged, epoch 2 checkpointed mid-way
            next(steps)
    steps.close()
    before = (run_dir / "metrics.jsonl").read_text()

    def crash_at_rewrite(point, path):
        if point == "rename" and path.name == "metrics.jsonl":
            raise SimulatedCrash("resume rewriting metrics.jsonl")

    previous = faults.install(crash_at_rewrite)
    try:
        with pytest.raises(SimulatedCrash):
            run_job(teacher_run(fake_cifar_root, run_dir, "resume=true"), run_dir)
    finally:
        faults.install(previous)
    assert (run_dir / "metrics.jsonl").read_text() == before  # the old file, whole
    run_job(teacher_run(fake_cifar_root, run_dir, "resume=true"), run_dir)
    assert losses(run_dir) == losses(reference)
