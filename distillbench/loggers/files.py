"""Plain files in the run directory: ``metrics.jsonl`` (one line per epoch) and ``summary.json``.

They need no service and no account, and ``scripts/make_tables.py`` reads them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from distillbench.loggers.base import RunInfo, RunLogger
from distillbench.storage import append_line, write_text_atomic

log = logging.getLogger("distillbench")

METRICS_FILE = "metrics.jsonl"
INIT_METRICS_FILE = "init_metrics.jsonl"
SUMMARY_FILE = "summary.json"


def read_metrics(run_dir: Path, name: str = METRICS_FILE) -> list[dict]:
    """The records of a metrics file. A torn last line (the process died while appending it) is
    dropped with a warning; its epoch is logged again when the run resumes."""
    path = Path(run_dir) / name
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                log.warning("The last line of %s is incomplete (the run was stopped while writing it); it is "
                            "ignored.", path)
                break
            raise
    return records


def _keep_until(path: Path, key: str, last: int) -> None:
    """Drop records logged after the checkpoint a run resumes from: they will be logged again.
    The file is replaced atomically, so a kill during the rewrite loses nothing."""
    if not path.exists():
        return
    kept = [m for m in read_metrics(path.parent, path.name) if m.get(key, 0) <= last]
    write_text_atomic(path, "".join(json.dumps(m) + "\n" for m in kept))


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
        append_line(self.metrics_path, json.dumps(metrics))
        self.last_epoch = int(metrics["epoch"])

    def log_init_epoch(self, metrics: dict[str, float]) -> None:
        append_line(self.init_metrics_path, json.dumps(metrics))
        self.last_init_epoch = int(metrics["init/epoch"])

    def log_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")

    def state_dict(self) -> dict:
        return {"epoch": self.last_epoch, "init_epoch": self.last_init_epoch}
