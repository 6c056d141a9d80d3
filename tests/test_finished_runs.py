"""A command whose run directory already holds its run, finished with the same identity, reports that run
instead of failing or training again: the quickstart run twice, a plain run, seeds side by side. Another
identity in the same directory is still refused."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from distillbench.errors import ResumeMismatchError
from distillbench.jobs import run_job, run_or_reuse, run_side_by_side
from tests.helpers import compose_config, tiny_run_overrides


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.md5(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def quickstart(cwd: Path) -> subprocess.CompletedProcess:
    """The quickstart shrunk to one step per job: one epoch on 64 training and 64 test images."""
    args = ["experiment=quickstart", "debug=fast", "dataset.subset.train=64", "dataset.subset.test=64",
            "trainer.progress=false", "logger.wandb.mode=disabled"]
    result = subprocess.run([sys.executable, "-m", "distillbench", *args], capture_output=True, text=True,
                            timeout=600, cwd=cwd)
    result.output = result.stdout + result.stderr
    return result


@pytest.mark.slow  # a whole command in its own process(es); CI runs it (pytest -m slow)
def test_the_quickstart_twice_reuses_its_finished_jobs_and_reports_them(tmp_path):
    first = quickstart(tmp_path)
    assert first.returncode == 0, first.output[-3000:]
    (run_dir,) = (tmp_path / "runs" / "quickstart").glob("*/seed0")
    before = snapshot(run_dir)
    assert {"teacher/model.pth", "vanilla/summary.json", "kd/summary.json"} <= set(before)

    second = quickstart(tmp_path)
    assert second.returncode == 0, second.output[-3000:]
    reused = [line for line in second.output.splitlines() if "Reusing the finished run" in line]
    assert [line.split(" (")[0].rsplit("/", 1)[1] for line in reused] == ["teacher", "vanilla", "kd"]
    assert all("overwrite=true" in line for line in reused)
    assert "epoch 1/1" not in second.output  # nothing trained
    assert snapshot(run_dir) == before  # not a byte nor a modification time changed
    table = [line for line in first.output.splitlines() if line.startswith("| ")]
    assert len(table) == 4 and table == [line for line in second.output.splitlines() if line.startswith("| ")]


@pytest.fixture
def teacher_run(fake_cifar_root, tmp_path):
    """A one-epoch resnet8 trained from scratch on the generated CIFAR-100."""
    def config(*extra: str, run_dir: Path = tmp_path / "run"):
        return compose_config(["role=teacher", "teacher=resnet8", "trainer.epochs=1",
                               *tiny_run_overrides(fake_cifar_root, tmp_path / "runs"), *extra], run_dir=run_dir)
    return config


def test_a_plain_run_finds_its_finished_run_and_reports_it_in_one_line(teacher_run, tmp_path, caplog):
    run_dir = tmp_path / "run"
    trained = run_or_reuse(teacher_run(), run_dir)
    before = snapshot(run_dir)
    with caplog.at_level(logging.INFO, logger="distillbench"):
        reported = run_or_reuse(teacher_run(), run_dir)
    assert reported == trained
    lines = [r.getMessage() for r in caplog.records if "Reusing" in r.getMessage()]
    assert len(lines) == 1 and str(run_dir) in lines[0]
    assert f"top-1 last {trained['acc1_last']:.2f}" in lines[0] and "overwrite=true" in lines[0]
    assert snapshot(run_dir) == before
    # resume=true after the end (a SLURM requeue of a job that had finished): the same report, nothing trained
    assert run_or_reuse(teacher_run("resume=true"), run_dir) == trained
    assert snapshot(run_dir) == before

    # Another identity in the same directory is refused, as before; the run stays as it was.
    with pytest.raises(ResumeMismatchError, match="optim.lr: 0.05 -> 0.2"):
        run_or_reuse(teacher_run("optim.lr=0.2"), run_dir)
    assert snapshot(run_dir) == before


def test_side_by_side_seeds_already_finished_are_reused_and_the_rest_trained(teacher_run, tmp_path):
    alone = run_job(teacher_run("seed=1", run_dir=tmp_path / "seeds" / "seed1"), tmp_path / "seeds" / "seed1")
    before = snapshot(tmp_path / "seeds" / "seed1")
    summaries = run_side_by_side(teacher_run("side_by_side_seeds=[0,1]", run_dir=tmp_path / "seeds" / "seed0"),
                                 tmp_path / "seeds" / "seed0")
    assert [s["seed"] for s in summaries] == [0, 1]
    assert summaries[1] == alone and snapshot(tmp_path / "seeds" / "seed1") == before
    assert (tmp_path / "seeds" / "seed0" / "summary.json").is_file()
