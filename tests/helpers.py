"""Helpers the tests share: composed configs, CPU-sized run overrides, crash injection through callbacks."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from distillbench.catalog import CONFIG_DIR  # noqa: E402 (the package's configs)
from distillbench.engine.callbacks import Callback

REPO_ROOT = Path(__file__).resolve().parents[1]


def compose_config(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
    """The config ``python -m distillbench OVERRIDES`` would run, without Hydra's runtime."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    if run_dir is not None:
        cfg.run_dir = str(run_dir)
    return cfg


def tiny_run_overrides(root: Path, runs: Path) -> list[str]:
    """A CPU-sized CIFAR-100 run on the generated files: small nets, no workers, no W&B."""
    return [
        f"dataset.root={root}",
        "dataset.verify_checksums=false",
        "dataset.num_workers=0",
        "dataset.test_num_workers=0",
        "dataset.batch_size=64",
        "dataset.test_batch_size=64",
        "trainer.device=cpu",
        "trainer.progress=false",
        "logger.wandb.mode=disabled",
        f"paths.runs={runs}",
    ]


class KillAt(Callback):
    """Raises ``error`` (a kill, by default) when the loop reaches ``hook`` for epoch ``epoch``."""

    def __init__(self, hook: str, epoch: int, error: BaseException | None = None):
        self.hook, self.epoch = hook, epoch
        self.error = error or KeyboardInterrupt(f"simulated kill at {hook} {epoch}")
        setattr(self, hook, self._maybe_kill)

    def _maybe_kill(self, trainer, epoch, *args) -> None:
        if epoch == self.epoch:
            raise self.error
