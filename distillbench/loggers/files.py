"""Plain files in the run directory: ``metrics.jsonl`` (one line per epoch) and ``summary.json``.

They need no service and no account, and ``scripts/make_tables.py`` reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distillbench.loggers.base import RunInfo, RunLogger

METRICS_FILE = "metrics.jsonl"
INIT_METRICS_FILE = "init_metrics.jsonl"
SUMMARY_FILE = "summary.json"


def read_metrics(run_dir: Path, name: str = METRICS_FILE) -> list[dict]:
    path = Path(run_dir) / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _keep_until(path: Path, key: str, last: int) -> None:
    """Drop records logged after the checkpoint a run resumes from: they will be logged again."""
    kept = [m for m in read_metrics(path.parent, path.name) if m.get(key, 0) <= last]
    path.write_text("".join(json.dumps(m) + "\n" for m in kept))


class FileLogger(RunLogger):
    def start(self, info: RunInfo, resume_state: dict | None = None) -> None:
        self.run_dir = Path(info.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.init_metrics_path = self.run_dir / INIT_METRICS_FILE
        state = resume_state or {}
        self.last_epoch = state.get("epoch", 0)
        self.last_init_epoch = state.get("init_epoch", 0)
        if resume_state is not None:
            _keep_until(self.metrics_path, "epoch", self.last_epoch)
            _keep_until(self.init_metrics_path, "init/epoch", self.last_init_epoch)
        else:
            self.metrics_path.unlink(missing_ok=True)
            self.init_metrics_path.unlink(missing_ok=True)

    def log_epoch(self, metrics: dict[str, float]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        self.last_epoch = int(metrics["epoch"])

    def log_init_epoch(self, metrics: dict[str, float]) -> None:
        with open(self.init_metrics_path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        self.last_init_epoch = int(metrics["init/epoch"])

    def log_summary(self, summary: dict[str, Any]) -> None:
        (self.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")

    def state_dict(self) -> dict:
        return {"epoch": self.last_epoch, "init_epoch": self.last_init_epoch}
