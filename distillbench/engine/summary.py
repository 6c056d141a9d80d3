"""The run's summary: what summary.json, the loggers and the tables read about a finished run."""

from __future__ import annotations

import math

from torch import nn

from distillbench.distillers.base import Distiller
from distillbench.engine.state import TrainState
from distillbench.loggers.base import RunInfo


def run_summary(state: TrainState, info: RunInfo, *, model: nn.Module, epochs: int, seed: int,
                teacher_acc1: float | None, distiller: Distiller | None) -> dict:
    summary = {
        "finished": True,
        "acc1_last": state.last_test.get("acc1", math.nan),
        "acc5_last": state.last_test.get("acc5", math.nan),
        "acc1_best": state.best_acc1,
        "best_epoch": state.best_epoch,
        "epochs": epochs,
        "seed": seed,
        "name": info.name,
        "job_type": info.job_type,
        "params": sum(p.numel() for p in model.parameters()),
        **info.tags,
        **info.summary_fields,
    }
    if teacher_acc1 is not None:
        summary["teacher_acc1"] = teacher_acc1
    if distiller is not None:
        summary["extra_params"] = distiller.extra_parameter_count()
    return summary
