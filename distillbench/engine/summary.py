"""The run's summary: what summary.json, the loggers and the tables read about a finished run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distillbench.engine.trainer import Trainer


def run_summary(trainer: Trainer) -> dict:
    state, info = trainer.state, trainer.info
    summary = {
        "finished": True,
        "acc1_last": state.last_test.get("acc1", math.nan),
        "acc5_last": state.last_test.get("acc5", math.nan),
        "acc1_best": state.best_acc1,
        "best_epoch": state.best_epoch,
        "epochs": trainer.epochs,
        "seed": trainer.seed,
        "name": info.name,
        "job_type": info.job_type,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        **info.tags,
        **info.summary_fields,
    }
    if trainer.teacher_acc1 is not None:
        summary["teacher_acc1"] = trainer.teacher_acc1
    if trainer.distiller is not None:
        summary["extra_params"] = trainer.distiller.extra_parameter_count()
    return summary
