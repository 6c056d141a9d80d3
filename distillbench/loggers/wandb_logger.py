"""Weights & Biases: one W&B run per distillbench run, resumable, grouped by experiment.

Errors from W&B are not caught: a run that silently stops logging is worse than a run that
stops. Use ``logger.wandb.mode=disabled`` to run without it.
"""

from __future__ import annotations

import netrc
import os
import secrets
from typing import Any

from distillbench.loggers.base import RunInfo, RunLogger

MODES = ("auto", "online", "offline", "disabled")


def has_api_key() -> bool:
    """Whether W&B credentials are configured (environment variable or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL_HOST", "api.wandb.ai"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def resolve_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"logger.wandb.mode must be one of {', '.join(MODES)}, got '{mode}'.")
    if mode == "auto":
        # W&B's own switch wins (WANDB_MODE=disabled in CI, for example).
        env = os.environ.get("WANDB_MODE")
        if env in ("online", "offline", "disabled"):
            return env
        return "online" if has_api_key() else "offline"
    return mode


def run_name(info: RunInfo) -> str:
    """Unique per run: experiment, variant (when not the default) and seed."""
    variant = "" if info.variant == "default" else f"[{info.variant}]"
    return f"{info.name}{variant}-seed{info.seed}"


def group_name(info: RunInfo) -> str:
    """The seeds of one identity (the identity without the seed) share a group: a table cell.
    W&B caps group names at 128 characters; the hash keeps a shortened one unique."""
    suffix = f"/{info.group}" if info.group else ""
    head = f"{info.name}/{info.variant}"
    return head[: 128 - len(suffix)] + suffix


class WandbLogger(RunLogger):
    def __init__(self, project: str = "distillbench", entity: str | None = None, mode: str = "auto"):
        self.project = project
        self.entity = entity
        self.mode = resolve_mode(mode)
        self.run = None
        self.run_id: str | None = None

    def start(self, info: RunInfo, resume_state: dict | None = None) -> None:
        import wandb

        self.run_id = (resume_state or {}).get("run_id") or secrets.token_hex(4)
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            name=run_name(info),
            group=group_name(info),
            job_type=info.job_type,
            tags=[f"{key}:{value}" for key, value in info.tags.items()],
            config=info.config,
            mode=self.mode,
            dir=info.run_dir,
            id=self.run_id,
            resume="allow",
            # Several runs may be active in one process (side by side); each logs through its own handle.
            reinit="create_new",
        )
        self.run.define_metric("epoch")
        self.run.define_metric("init/epoch")
        self.run.define_metric("init/*", step_metric="init/epoch")
        self.run.define_metric("*", step_metric="epoch")

    def log_epoch(self, metrics: dict[str, float]) -> None:
        self.run.log(metrics)

    def log_init_epoch(self, metrics: dict[str, float]) -> None:
        self.run.log(metrics)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.run.summary.update(summary)

    def finish(self, success: bool = True) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if success else 1)
            self.run = None

    def state_dict(self) -> dict:
        return {"run_id": self.run_id}
