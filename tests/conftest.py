"""Shared fixtures: generated CIFAR-100 on disk, W&B off, CUDA tests skipped without a GPU (see tests/helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distillbench.data import write_fake_cifar100

os.environ.setdefault("WANDB_MODE", "disabled")


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``cuda`` are skipped on a machine without a CUDA GPU (scripts/gpu_check.sh runs them on one)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marked cuda)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fake_cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar100(root, n_train=256, n_test=64, seed=0)
    return root
