"""Shared fixtures: composed configs, generated CIFAR-100 on disk, W&B kept off."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from distillbench.data import write_fake_cifar100

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

os.environ.setdefault("WANDB_MODE", "disabled")


def compose_config(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
    """The config ``python -m distillbench OVERRIDES`` would run, without Hydra's runtime."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    if run_dir is not None:
        cfg.run_dir = str(run_dir)
    return cfg


@pytest.fixture(scope="session")
def fake_cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar100(root, n_train=256, n_test=64, seed=0)
    return root


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
