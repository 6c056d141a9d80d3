"""Finished runs as records: from run directories on disk, or from W&B through its API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from distillbench.loggers.files import SUMMARY_FILE


@dataclass(frozen=True)
class RunRecord:
    """One finished run: the table cell it belongs to and its two accuracies."""

    dataset: str
    method: str  # a distiller name, or vanilla_teacher / vanilla_student
    teacher: str
    student: str | None
    seed: int
    acc1_last: float
    acc1_best: float
    source: str


def record_from_summary(summary: dict, source: str) -> RunRecord | None:
    """The cell a summary belongs to; None for runs that are not part of a table (quickstart)."""
    dataset = summary.get("dataset")
    if dataset is None or "acc1_last" not in summary or summary.get("eval_split", "test") != "test":
        return None  # not a table run, or a tuning run scored on held-out training images
    if summary.get("job_type") == "teacher":
        method, teacher, student = "vanilla_teacher", summary["arch"], None
    elif summary.get("method") in (None, "none"):
        method, teacher, student = "vanilla_student", None, summary["arch"]
    else:
        method, teacher, student = summary["method"], summary["teacher"], summary["student"]
    return RunRecord(dataset=dataset, method=method, teacher=teacher, student=student, seed=int(summary["seed"]),
                     acc1_last=float(summary["acc1_last"]), acc1_best=float(summary["acc1_best"]), source=source)


def load_local_runs(roots: list[Path]) -> list[RunRecord]:
    """Every ``summary.json`` below the given folders (runs still in progress have none)."""
    records = []
    for root in roots:
        for path in sorted(Path(root).rglob(SUMMARY_FILE)):
            record = record_from_summary(json.loads(path.read_text()), str(path.parent))
            if record is not None:
                records.append(record)
    return records


def load_wandb_runs(path: str, api=None) -> list[RunRecord]:
    """Finished runs of a W&B project ``entity/project``, read from their summaries.

    Each run's summary holds the same fields as ``summary.json`` (the trainer logs it whole),
    so a table can be rebuilt from W&B alone.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    records = []
    for run in api.runs(path, filters={"state": "finished"}):
        record = record_from_summary(dict(run.summary), f"wandb:{path}/{run.id}")
        if record is not None:
            records.append(record)
    return records
