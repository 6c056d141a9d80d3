"""Reference settings by default on every device; `trainer=fast` opts into the fast path."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from distillbench.build import build_loaders
from distillbench.runtime.distributed import DistContext
from tests.helpers import REPO_ROOT, compose_config
from tests.test_every_experiment_builds import write_stl10

REFERENCE = {"precision": "float32", "channels_last": False, "fused_optimizer": False, "teacher_cache": False,
             "compile": False}
FAST = {"precision": "bf16", "channels_last": True, "fused_optimizer": True, "teacher_cache": "auto", "compile": False}
SAMPLE = ["crd_resnet32x4_8x4", "kd_imagenet_r34_r18", "transfer_rrd_stl10", "teacher_resnet32x4", "quickstart"]


def test_the_cli_prints_float32_for_a_cifar_cell():
    out = subprocess.run([sys.executable, "-m", "distillbench", "experiment=crd_resnet32x4_8x4", "--cfg", "job"],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert "precision: float32" in out and "channels_last: false" in out and "loader: torch" in out


@pytest.mark.parametrize("name", SAMPLE)
def test_reference_settings_unless_trainer_fast(name):
    """Every experiment is checked the same way in tests/test_every_experiment_builds.py (slow); a sample here."""
    cfg = compose_config([f"experiment={name}"])
    assert {k: cfg.trainer[k] for k in REFERENCE} == REFERENCE
    assert cfg.dataset.loader == "torch"
    fast = compose_config([f"experiment={name}", "trainer=fast"])
    assert {k: fast.trainer[k] for k in FAST} == FAST
    assert fast.dataset.loader == "auto"
    # Only the speed switches differ: the recipe is the same.
    assert fast.trainer.epochs == cfg.trainer.epochs and fast.dataset.batch_size == cfg.dataset.batch_size
    assert fast.sched == cfg.sched and fast.optim == cfg.optim and fast.dataset.name == cfg.dataset.name


def test_the_fast_preset_composes_the_default_trainer_file():
    default, fast = compose_config([]).trainer, compose_config(["trainer=fast"]).trainer
    assert set(default) == set(fast)
    assert {k: v for k, v in fast.items() if k not in FAST} == {k: v for k, v in default.items() if k not in FAST}


def test_auto_loader_keeps_the_dataloader_for_a_set_the_device_loader_cannot_augment(tmp_path):
    """STL-10 is held in memory but resized: under trainer=fast on a GPU its loader stays the DataLoader."""
    write_stl10(tmp_path, n_train=8, n_test=4)
    cfg = compose_config(["experiment=transfer_rrd_stl10", "trainer=fast", f"dataset.root={tmp_path}",
                          "dataset.num_workers=0", "dataset.test_num_workers=0"])
    train_set, test_set = instantiate(cfg.dataset.build)
    train, test = build_loaders(cfg, train_set, test_set, torch.device("cuda"), True, DistContext())
    assert isinstance(train, DataLoader) and isinstance(test, DataLoader)
