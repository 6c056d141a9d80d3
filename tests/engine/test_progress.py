"""Progress: plain lines where the output is no terminal, and a whole-run ETA in the log."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from distillbench.engine.callbacks import Progress, format_duration
from tests.engine.test_trainer import make_trainer


def test_a_non_terminal_log_gets_plain_lines_and_the_run_eta(tmp_path, caplog, capsys):
    trainer = make_trainer(tmp_path, epochs=3, progress=True)  # pytest's stderr is no terminal
    with caplog.at_level(logging.INFO, logger="distillbench"):
        trainer.fit()
    messages = [r.getMessage() for r in caplog.records]
    step_lines = [m for m in messages if m.startswith("epoch ") and " step " in m]
    # 3 steps per epoch, a line every ceil(3/4) = 1 step, none for the last step (the epoch line follows)
    assert [m.split(" loss")[0] for m in step_lines] == [
        f"epoch {e}/3 step {s}/3" for e in (1, 2, 3) for s in (1, 2)]
    assert all("steps/s" in m for m in step_lines)
    assert all("run ends in" in m for m in step_lines if not m.startswith("epoch 1/"))
    etas = [m for m in messages if m.startswith("run ETA")]
    assert [m.split(",")[0] for m in etas] == ["run ETA: 2 epoch(s) left", "run ETA: 1 epoch(s) left"]
    assert "\r" not in capsys.readouterr().err  # no bar frames in a log


def test_progress_off_writes_no_step_lines(tmp_path, caplog):
    trainer = make_trainer(tmp_path, epochs=2, progress=False)
    with caplog.at_level(logging.INFO, logger="distillbench"):
        trainer.fit()
    assert not [r for r in caplog.records if " step " in r.getMessage()]


def test_the_run_eta_is_epochs_left_times_the_mean_epoch_time():
    progress = Progress(enabled=True, terminal=False)
    trainer = SimpleNamespace(epochs=10)
    assert progress.run_eta(trainer, epoch=3) is None  # nothing measured yet
    progress.epoch_seconds = [10.0, 20.0]
    assert progress.run_eta(trainer, epoch=3) == pytest.approx(15.0 * 8)  # epochs 3..10 left
    assert progress.run_eta(trainer, epoch=3, fraction_done=0.5) == pytest.approx(15.0 * 7.5)
    assert format_duration(3725.4) == "1:02:05"
