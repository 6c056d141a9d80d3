"""What the loop tells the outside world, as callbacks: progress, step hooks, periodic checkpoints.

The loop calls every callback's hooks in order; a callback that raises stops the run like any other
error (tests inject crashes this way). Hooks receive the ``Trainer`` so they can read its state.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from datetime import datetime, timedelta
from typing import Protocol

from tqdm.auto import tqdm

from distillbench.engine.step import StepOutput

log = logging.getLogger("distillbench")


class Trainer(Protocol):
    """What the hooks may read of the loop that calls them (``engine.trainer.Trainer``)."""

    epochs: int
    distiller: object
    train_loader: object
    on_step: object

    def save_mid_epoch(self, epoch: int, step: int) -> None: ...


class Callback:
    """Override the hooks you need; each default does nothing."""

    def on_epoch_start(self, trainer: Trainer, epoch: int, first_step: int, steps: int) -> None: ...

    def on_step_end(self, trainer: Trainer, epoch: int, step: int, out: StepOutput) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None: ...

    def on_init_epoch_start(self, trainer: Trainer, init_epoch: int) -> None: ...

    def on_init_step_end(self, trainer: Trainer, init_epoch: int, step: int, out: StepOutput) -> None: ...

    def on_init_epoch_end(self, trainer: Trainer, init_epoch: int, metrics: dict) -> None: ...


class StepHook(Callback):
    """The trainer's ``on_step(step, terms)`` after every step, with the total as ``terms['loss']`` (device
    tensors); read at each call, so it can be set on a built trainer."""

    def on_step_end(self, trainer, epoch, step, out):
        if trainer.on_step is not None:
            trainer.on_step(step, {"loss": out.loss, **out.terms})


class PeriodicCheckpoint(Callback):
    """A mid-epoch checkpoint every ``every_steps`` steps (long ImageNet epochs, preemptible machines)."""

    def __init__(self, every_steps: int):
        self.every_steps = every_steps

    def on_epoch_start(self, trainer, epoch, first_step, steps):
        self.steps = steps

    def on_step_end(self, trainer, epoch, step, out):
        if step % self.every_steps == 0 and step < self.steps:
            trainer.save_mid_epoch(epoch, step)


def format_duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class Progress(Callback):
    """A bar per epoch on a terminal; elsewhere (SLURM logs, nohup, CI) a plain line every quarter epoch.

    Both show when the whole run should end: epochs left times the mean measured epoch time (train and
    evaluation). The loss is read on the host only when a line or the bar's postfix is written.
    """

    LINES_PER_EPOCH = 4

    def __init__(self, enabled: bool = True, terminal: bool | None = None, every_steps: int = 50):
        self.enabled = enabled
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.every_steps = max(1, every_steps)  # the bar's postfix refresh
        self.epoch_seconds: list[float] = []
        self.bar = None

    def run_eta(self, trainer: Trainer, epoch: int, fraction_done: float = 0.0) -> float | None:
        """Seconds until the last epoch ends, from the epochs measured in this session."""
        if not self.epoch_seconds:
            return None
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        return mean * (trainer.epochs - epoch + 1 - fraction_done)

    def on_epoch_start(self, trainer, epoch, first_step, steps):
        self.started = time.perf_counter()
        self.first_step, self.steps = first_step, steps
        self.line_every = max(1, math.ceil(steps / self.LINES_PER_EPOCH))
        if self.enabled and self.terminal:
            self.bar = tqdm(desc=f"epoch {epoch}/{trainer.epochs}", leave=False, dynamic_ncols=True,
                            initial=first_step, total=steps)

    def on_step_end(self, trainer, epoch, step, out):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update()
            if step % self.every_steps == 0:
                eta = self.run_eta(trainer, epoch, step / self.steps)
                self.bar.set_postfix(loss=f"{out.loss.item():.3f}",
                                     **({"run_eta": format_duration(eta)} if eta is not None else {}))
        elif step % self.line_every == 0 and step < self.steps:
            elapsed = time.perf_counter() - self.started
            rate = (step - self.first_step) / max(elapsed, 1e-9)
            eta = self.run_eta(trainer, epoch, step / self.steps)
            log.info("epoch %d/%d step %d/%d loss %.3f, %.1f steps/s%s", epoch, trainer.epochs, step, self.steps,
                     out.loss.item(), rate, f", run ends in {format_duration(eta)}" if eta is not None else "")

    def on_epoch_end(self, trainer, epoch, metrics):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.epoch_seconds.append(time.perf_counter() - self.started)
        if epoch < trainer.epochs:
            eta = self.run_eta(trainer, epoch + 1)
            finish = datetime.now() + timedelta(seconds=eta)
            log.info("run ETA: %d epoch(s) left, about %s (at %s)", trainer.epochs - epoch, format_duration(eta),
                     finish.strftime("%Y-%m-%d %H:%M"))

    def on_init_epoch_start(self, trainer, init_epoch):
        if self.enabled and self.terminal:
            self.bar = tqdm(desc=f"init {init_epoch}/{trainer.distiller.init_epochs}", leave=False,
                            dynamic_ncols=True, total=len(trainer.train_loader))

    def on_init_step_end(self, trainer, init_epoch, step, out):
        if self.bar is not None:
            self.bar.update()

    def on_init_epoch_end(self, trainer, init_epoch, metrics):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
