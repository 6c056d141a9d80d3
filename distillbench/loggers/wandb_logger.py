"""Weights & Biases: one W&B run per distillbench run, resumable, grouped by experiment and variant.

Online when an API key is configured, offline otherwise; either way W&B itself stays quiet and the run
says in one line where it went: its URL, or its offline folder and the ``wandb sync`` command that uploads
it. Offline runs of every experiment go to one folder, ``<logger.wandb.dir>/wandb/`` (``runs/wandb/`` by
default), not into the run directories, so one command uploads them all.

Errors from W&B are not caught: a run that silently stops logging is worse than a run that stops. Use
``logger.wandb.mode=disabled`` to run without it.
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
from pathlib import Path
from typing import Any

from distillbench.loggers.base import RunInfo, RunLogger

log = logging.getLogger("distillbench")

MODES = ("auto", "online", "offline", "disabled")
# W&B caps group names at 128 characters.
MAX_GROUP_CHARS = 128


def has_api_key() -> bool:
    """Whether W&B credentials are configured here, read locally only: a key or identity-token file in the
    environment, or a netrc entry (``$NETRC`` or ~/.netrc) for W&B's host (``WANDB_BASE_URL_HOST``, else
    api.wandb.ai)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(os.environ.get("WANDB_BASE_URL_HOST", "api.wandb.ai"))
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


def why_offline(mode: str) -> str:
    """What made a run with ``logger.wandb.mode=mode`` offline, for the one line that says so."""
    if mode == "offline":
        return "logger.wandb.mode=offline"
    if os.environ.get("WANDB_MODE") == "offline":
        return "WANDB_MODE=offline"
    return "no W&B API key is configured; `wandb login` logs the next runs online"


def run_name(info: RunInfo) -> str:
    """Unique per run: experiment, job (of a multi-job experiment), variant (when not the default) and seed."""
    job = f"/{info.job}" if info.job else ""
    variant = "" if info.variant == "default" else f"[{info.variant}]"
    return f"{info.name}{job}{variant}-seed{info.seed}"


def group_name(info: RunInfo) -> str:
    """The seeds of one identity (the identity without the seed) share a group: a table cell, named by
    experiment (and job) and variant. A shortened name stays unique through the identity hash at its end."""
    suffix = f"/{info.group}" if info.group else ""
    job = f"/{info.job}" if info.job else ""
    head = f"{info.name}{job}/{info.variant}"
    return head[: MAX_GROUP_CHARS - len(suffix)] + suffix


def shown_path(path: str | Path) -> str:
    """``path`` relative to the current directory when it lies below it (shorter to read and to paste)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def offline_notice(sync_dir: str | Path, reason: str) -> str:
    folder = shown_path(sync_dir)
    return f"W&B is offline ({reason}): this run is saved in {folder}; upload it with `wandb sync {folder}`"


class WandbLogger(RunLogger):
    """``root``: W&B's folder goes in ``<root>/wandb`` (offline runs, W&B's own logs)."""

    def __init__(self, project: str = "distillbench", entity: str | None = None, mode: str = "auto",
                 root: str | Path = "runs"):
        self.project = project
        self.entity = entity
        self.setting = mode
        self.mode = resolve_mode(mode)
        self.root = Path(root).absolute()
        self.run = None
        self.run_id: str | None = None

    def start(self, info: RunInfo, resume_state: dict | None = None) -> None:
        import wandb

        self.run_id = (resume_state or {}).get("run_id") or secrets.token_hex(4)
        self.root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            name=run_name(info),
            group=group_name(info),
            job_type=info.job_type,
            tags=[f"{key}:{value}" for key, value in info.tags.items()],
            config=info.config,
            mode=self.mode,
            dir=str(self.root),
            id=self.run_id,
            resume="allow",
            # Several runs may be active in one process (side by side); each logs through its own handle.
            reinit="create_new",
            # No banner, no sync hints: the line below says what matters. The console is not captured: the run
            # directory's train.log holds it, and runs sharing a process would capture each other's lines.
            settings=wandb.Settings(silent=True, console="off"),
        )
        if self.mode == "offline":
            log.info("%s", offline_notice(self.run.settings.sync_dir, why_offline(self.setting)))
        else:
            log.info("W&B run %s: %s", run_name(info), self.run.url)
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
