"""Stop signals: a handler installed before ours (submitit's requeue) still runs, after the checkpoint."""

from __future__ import annotations

import os
import signal

import pytest

from distillbench.engine.preemption import Preempted, StopRequests


def test_submitits_handler_runs_after_the_checkpoint_then_the_run_stops(tmp_path) -> None:
    calls = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with StopRequests() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert stop.requested and calls == []  # recorded, not acted upon mid-step
            with pytest.raises(Preempted, match="SIGUSR2"):
                stop.raise_if_requested("at step 3 of epoch 1", tmp_path)
        assert calls == [signal.SIGUSR2]
        assert signal.getsignal(signal.SIGUSR2) is not None and signal.getsignal(signal.SIGUSR2).__name__ == "<lambda>"
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_without_a_previous_handler_the_run_just_stops(tmp_path) -> None:
    with StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        with pytest.raises(Preempted, match="resume=true"):
            stop.raise_if_requested("after epoch 2", tmp_path)
