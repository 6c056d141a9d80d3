"""configs/debug/ (a quick run on a few images) and configs/local/ (this machine's paths, git-ignored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf

from distillbench.build import build_trainer
from distillbench.data import build_cifar100
from distillbench.data.subset import apply_subset, spread_indices
from distillbench.identity import identity_fields, identity_hash, variant_name, variant_overrides
from distillbench.loggers import read_metrics
from tests.helpers import CONFIG_DIR, compose_config, tiny_run_overrides


def test_debug_fast_trains_one_epoch_on_a_subset_end_to_end(fake_cifar_root, tmp_path):
    overrides = ["experiment=teacher_resnet56", "teacher=resnet8", "debug=fast",
                 *tiny_run_overrides(fake_cifar_root, tmp_path / "runs"), "dataset.subset.train=64",
                 "dataset.subset.test=32"]
    run_dir = tmp_path / "run"
    trainer = build_trainer(compose_config(overrides, run_dir=run_dir), run_dir, overrides=overrides)
    assert len(trainer.train_loader.dataset) == 64 and len(trainer.test_loader.dataset) == 32
    summary = trainer.fit()
    assert summary["epochs"] == 1 and [m["epoch"] for m in read_metrics(run_dir)] == [1]
    best = torch.load(run_dir / "model_best.pth", weights_only=True)
    assert (best["acc1"], best["epoch"]) == (summary["acc1_best"], summary["best_epoch"]) == (summary["acc1_last"], 1)
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert recorded["dataset"]["subset"] == {"train": 64, "test": 32}
    # A debug run is its own variant and identity, never the real run's.
    assert "debug=fast" in variant_overrides(overrides) and summary["variant"] == variant_name(overrides)


def test_debug_runs_have_their_own_identity_and_overfit_trains_without_augmentation(fake_cifar_root):
    def identity(*overrides):
        cfg = compose_config(["experiment=kd_resnet32x4_8x4", *overrides], run_dir=Path("unused"))
        return identity_hash(identity_fields(OmegaConf.to_container(cfg, resolve=True), {}))

    assert len({identity(), identity("debug=fast"), identity("debug=overfit")}) == 3
    assert variant_name(["debug=fast"]) == "debug=fast"
    cfg = compose_config(["debug=overfit"])
    assert cfg.trainer.epochs > 1 and cfg.dataset.augment is False and cfg.dataset.subset.train == 512
    train, test = build_cifar100(fake_cifar_root, verify_checksums=False)
    small_train, small_test = apply_subset(train, test, {"train": 16, "test": 8}, augment=False)
    assert small_train.transform is test.transform and train.transform is not test.transform
    assert np.array_equal(small_train.data, train.data[spread_indices(256, 16)])
    assert np.array_equal(small_test.targets, test.targets[::8]) and small_train.provenance == train.provenance


def test_a_local_config_when_present_sets_this_machines_paths(tmp_path):
    assert compose_config([]).paths.data == "data"  # no configs/local/default.yaml in the tests' search path
    example = (CONFIG_DIR / "local" / "example.yaml.example").read_text()
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text(example)  # as `cp example.yaml.example default.yaml` does
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    cfg = compose_config([searchpath, "experiment=kd_resnet32x4_8x4"])
    assert cfg.paths.data == cfg.dataset.root == "/data"
    assert cfg.teacher.checkpoint == "/data/teachers/resnet32x4_vanilla/ckpt_epoch_240.pth"
    assert compose_config([searchpath, "paths.data=/elsewhere"]).dataset.root == "/elsewhere"  # the command line wins
