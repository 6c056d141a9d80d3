"""What a checkpoint holds: the training state and the module states, written and restored in one place.

``TrainState`` is where the run is (epochs done, steps into the next one, the best epoch); ``Checkpoints``
turns it and the modules (student, distiller, optimiser, schedule, RNG, logger, and the teacher when its
BN statistics move) into the checkpoint dictionary and back. The file format is ``engine/checkpoint.py``'s.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from distillbench.distillers.base import Distiller
from distillbench.engine.checkpoint import (
    CHECKPOINT_DIR,
    NonFiniteStateError,
    load_training_checkpoint,
    save_training_checkpoint,
)
from distillbench.errors import DivergenceError
from distillbench.loggers.base import RunInfo, RunLogger
from distillbench.runtime.seeding import capture_rng_state, restore_rng_state

log = logging.getLogger("distillbench")


@dataclass
class TrainState:
    """Where a run stands. ``epoch`` main epochs are complete, and ``step`` steps of the next one."""

    epoch: int = 0
    step: int = 0
    init_epoch: int = 0
    best_acc1: float = -math.inf
    best_epoch: int = 0
    last_test: dict[str, float] = field(default_factory=dict)
    meter: dict | None = None  # the unfinished epoch's sums, with a mid-epoch checkpoint


class Checkpoints:
    """Saves and restores a run's checkpoints in ``run_dir/checkpoints`` (rank 0 writes)."""

    def __init__(self, *, run_dir: Path, model: nn.Module, teacher: nn.Module | None, distiller: Distiller | None,
                 logger: RunLogger, info: RunInfo, seed: int, is_main: bool):
        self.dir = Path(run_dir) / CHECKPOINT_DIR
        self.model = model
        self.teacher = teacher
        self.distiller = distiller
        self.logger = logger
        self.info = info
        self.seed = seed
        self.is_main = is_main
        self.last_good_epoch = 0

    def _teacher_moves(self) -> bool:
        return self.distiller is not None and self.distiller.teacher_train_mode

    def _common(self) -> dict:
        return {
            **({"teacher": self.teacher.state_dict()} if self._teacher_moves() else {}),
            "model": self.model.state_dict(),
            "distiller": self.distiller.state_dict() if self.distiller is not None else {},
            "rng": capture_rng_state(),
            "logger": self.logger.state_dict(),
            "seed": self.seed,
            "identity": self.info.identity,
            "config": self.info.config,
        }

    def init_stage(self, init_epoch: int, optimizer: torch.optim.Optimizer) -> dict:
        """A checkpoint inside the init stage of a two-stage method."""
        return {**self._common(), "epoch": 0, "step": 0, "init_epoch": init_epoch,
                "init_optimizer": optimizer.state_dict()}

    def main_stage(self, state: TrainState, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict:
        return {
            **self._common(),
            "epoch": state.epoch,
            "step": state.step,
            "init_epoch": state.init_epoch,
            "meter": state.meter,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "best_acc1": state.best_acc1,
            "best_epoch": state.best_epoch,
            "last_test": state.last_test,
        }

    def load(self) -> dict | None:
        state = load_training_checkpoint(self.dir, self.info.identity)
        if state is None:
            log.info("resume=true, but %s holds no checkpoint: starting from scratch.", self.dir)
        else:
            self.last_good_epoch = state["epoch"]
        return state

    def restore_common(self, state: dict) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(
                f"The checkpoint in {self.dir} was made with seed {state.get('seed')}, this run uses "
                f"seed {self.seed}; resume with the same seed or use another run directory."
            )
        self.model.load_state_dict(state["model"])
        if self._teacher_moves():
            self.teacher.load_state_dict(state["teacher"])
        if self.distiller is not None:
            self.distiller.load_state_dict(state["distiller"])
        restore_rng_state(state["rng"])

    def restore_main(self, state: dict, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler) -> TrainState:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        log.info("resumed from %s after epoch %d, step %d", self.dir, state["epoch"], state["step"])
        return TrainState(epoch=state["epoch"], step=state["step"], init_epoch=state["init_epoch"],
                          best_acc1=state["best_acc1"], best_epoch=state["best_epoch"],
                          last_test=state["last_test"], meter=state["meter"])

    def save(self, checkpoint: dict) -> None:
        """Every rank holds the same state (same weights, same memories); rank 0 writes it.

        A state with a NaN or Inf anywhere (weights, BN statistics, optimiser or distiller state) is
        never written: the run stops and the last good checkpoint stays the one to resume from."""
        if not self.is_main:
            return
        try:
            save_training_checkpoint(checkpoint, self.dir)
        except NonFiniteStateError as err:
            where = (f"init epoch {checkpoint['init_epoch']}" if "init_optimizer" in checkpoint
                     else f"epoch {checkpoint['epoch']}"
                     + (f", step {checkpoint['step']}" if checkpoint.get("step") else ""))
            raise DivergenceError(
                f"Training diverged: after {where}, {err}. That state was not saved; the last good checkpoint "
                f"stays in {self.dir} (epoch {self.last_good_epoch}). Lower the learning rate or the "
                "weight of the loss term that grows, or rerun with trainer.detect_anomaly=true to find the "
                "operation that produced it."
            ) from None
        self.last_good_epoch = checkpoint["epoch"]
