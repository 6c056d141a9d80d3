"""What the trainer tells its loggers, and a fan-out to several of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunInfo:
    """Who a run is: enough for every logger to name, group and tag it."""

    name: str
    job_type: str  # "teacher", "student" or "probe" (a linear probe on a frozen network)
    run_dir: str
    seed: int
    config: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # Copied into the run's summary as they are (e.g. the published number the run should reach).
    summary_fields: dict[str, Any] = field(default_factory=dict)
    # The run's identity (distillbench.identity), its group (the identity without the seed) and variant.
    identity: str | None = None
    group: str | None = None
    variant: str = "default"
    # Its name among the experiment's jobs (the quickstart's teacher, vanilla, kd); None for a single run.
    job: str | None = None


class RunLogger:
    """Base logger: every hook is optional. ``state_dict`` goes into checkpoints so that a
    resumed run continues the same logged run (the W&B run id, for example)."""

    def start(self, info: RunInfo, resume_state: dict | None = None) -> None:
        pass

    def log_epoch(self, metrics: dict[str, float]) -> None:
        pass

    def log_init_epoch(self, metrics: dict[str, float]) -> None:
        """An epoch of a two-stage method's init stage (keys ``init/...``)."""

    def log_summary(self, summary: dict[str, Any]) -> None:
        pass

    def finish(self, success: bool = True) -> None:
        pass

    def state_dict(self) -> dict:
        return {}


class LoggerGroup(RunLogger):
    """Forwards every call to each logger; checkpoint state is kept per logger class name."""

    def __init__(self, loggers: list[RunLogger]):
        self.loggers = list(loggers)

    def start(self, info: RunInfo, resume_state: dict | None = None) -> None:
        resume_state = resume_state or {}
        for logger in self.loggers:
            logger.start(info, resume_state.get(type(logger).__name__))

    def log_epoch(self, metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_epoch(metrics)

    def log_init_epoch(self, metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_init_epoch(metrics)

    def log_summary(self, summary: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_summary(summary)

    def finish(self, success: bool = True) -> None:
        for logger in self.loggers:
            logger.finish(success)

    def state_dict(self) -> dict:
        return {type(logger).__name__: logger.state_dict() for logger in self.loggers}
