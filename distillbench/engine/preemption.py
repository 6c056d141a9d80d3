"""SIGTERM, SIGUSR1 and SIGUSR2, what SLURM (or submitit through it) sends before it stops or requeues a
job, become a request to stop at the next step boundary, after a checkpoint; never an interruption
mid-update."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch

from distillbench.runtime import distributed

# SIGUSR2 is what submitit asks SLURM to send before a time limit or a preemption.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(RuntimeError):
    """A stop signal arrived; a checkpoint was saved and the run can be resumed."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class StopRequests:
    """While entered, records the stop signals that arrive instead of dying of them.

    On several ranks a signal may reach the ranks at different steps; a rank acts on it only
    once ``agree()`` has shared it with all of them, so every rank stops at the same step.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._received: int | None = None
        self._previous: dict = {}

    def agree(self, device: torch.device) -> None:
        """Make a signal received by any rank a request on every rank (collective: all ranks call it)."""
        if not distributed.is_distributed():
            return
        received = torch.tensor(self._received or 0, device=device)
        agreed = int(distributed.all_reduce_max(received))
        if agreed:
            self.signum = agreed

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there

            def record(signum, frame):
                self._received = signum
                if not distributed.is_distributed():
                    self.signum = signum

            self._previous = {signum: signal.signal(signum, record) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def raise_if_requested(self, where: str, checkpoint_dir: Path) -> None:
        """Called right after a checkpoint was saved at ``where``.

        A Python handler that was installed for the signal before ours (submitit's, which
        requeues the SLURM job) runs now, with the work saved; then the run stops.
        """
        if self.signum is None:
            return
        previous = self._previous.get(self.signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.signum, None)
        raise Preempted(
            self.signum,
            f"{signal.Signals(self.signum).name} received: stopped {where}, with a checkpoint in {checkpoint_dir}. "
            "Run the same command with resume=true to continue exactly where it stopped.",
        )
