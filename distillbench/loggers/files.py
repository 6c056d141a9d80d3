"""Plain files in the run directory: ``metrics.jsonl`` (one line per epoch) and ``summary.json``.

They need no service and no account, and ``scripts/make_tables.py`` reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distillbench.loggers.base import RunInfo, RunLogger

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class FileLogger(RunLogger):
    def start(self, info: RunInfo, resume_state: dict | None = None) -> None:
        self.run_dir = Path(info.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE
        if resume_state is not None:
            # Drop epochs logged after the checkpoint we resume from: they will be run again.
            last_epoch = resume_state.get("epoch", 0)
            kept = [m for m in read_metrics(self.run_dir) if m.get("epoch", 0) <= last_epoch]
            self.metrics_path.write_text("".join(json.dumps(m) + "\n" for m in kept))
        elif self.metrics_path.exists():
            self.metrics_path.unlink()
        self.last_epoch = 0

    def log_epoch(self, metrics: dict[str, float]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        self.last_epoch = int(metrics["epoch"])

    def log_summary(self, summary: dict[str, Any]) -> None:
        (self.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")

    def state_dict(self) -> dict:
        return {"epoch": self.last_epoch}
