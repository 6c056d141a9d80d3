"""One readable line per epoch on the console (the per-step progress bar is the trainer's)."""

from __future__ import annotations

import logging
from typing import Any

from distillbench.loggers.base import RunInfo, RunLogger

log = logging.getLogger("distillbench")


class ConsoleLogger(RunLogger):
    """``prefix`` tells runs apart when several share one console (side by side)."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def start(self, info: RunInfo, resume_state: dict | None = None) -> None:
        self.epochs = info.config.get("trainer", {}).get("epochs", "?")
        # The split the test/* metrics were scored on: "holdout" (tuning on held-out training images) or "test".
        self.eval_split = info.tags.get("eval_split", "test")
        log.info(self.prefix + "run %s (%s, seed %d) -> %s", info.name, info.job_type, info.seed, info.run_dir)

    def log_epoch(self, metrics: dict[str, float]) -> None:
        losses = " ".join(
            f"{k.removeprefix('train/loss_')}={v:.4f}" for k, v in metrics.items() if k.startswith("train/loss_")
        )
        log.info(
            self.prefix + "epoch %d/%s lr=%.4g %s train_acc1=%.2f %s_acc1=%.2f %s_acc5=%.2f %.1fs %.0f img/s",
            metrics["epoch"], self.epochs, metrics["lr"], losses, metrics["train/acc1"], self.eval_split,
            metrics["test/acc1"], self.eval_split, metrics["test/acc5"], metrics["time/epoch_s"],
            metrics["time/images_per_s"],
        )

    def log_init_epoch(self, metrics: dict[str, float]) -> None:
        losses = " ".join(f"{k.removeprefix('init/loss_')}={v:.4f}" for k, v in metrics.items()
                          if k.startswith("init/loss_"))
        log.info(self.prefix + "init epoch %d %s %.1fs", metrics["init/epoch"], losses, metrics["init/epoch_s"])

    def log_summary(self, summary: dict[str, Any]) -> None:
        log.info(
            self.prefix + "finished: acc1_last=%.2f acc1_best=%.2f (epoch %d) on the %s split",
            summary["acc1_last"], summary["acc1_best"], summary["best_epoch"], self.eval_split,
        )
