"""SIGTERM and SIGUSR1, what SLURM sends before it stops or requeues a job, become a request to
stop at the next step boundary, after a checkpoint; never an interruption mid-update."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(RuntimeError):
    """A stop signal arrived; a checkpoint was saved and the run can be resumed."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class StopRequests:
    """While entered, records the stop signals that arrive instead of dying of them."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there

            def record(signum, frame):
                self.signum = signum

            self._previous = {signum: signal.signal(signum, record) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def raise_if_requested(self, where: str, checkpoint_dir: Path) -> None:
        """Called right after a checkpoint was saved at ``where``."""
        if self.signum is None:
            return
        raise Preempted(
            self.signum,
            f"{signal.Signals(self.signum).name} received: stopped {where}, with a checkpoint in {checkpoint_dir}. "
            "Run the same command with resume=true to continue exactly where it stopped.",
        )
