"""model_best.pth: the weights of the best test top-1, kept next to model.pth, and kept across a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import distillbench.engine.trainer as trainer_module
from distillbench.build import build_trainer
from distillbench.jobs import run_job
from distillbench.loggers import read_metrics
from tests.helpers import compose_config, tiny_run_overrides

# Test top-1 per epoch, scripted so that the best epoch (2) comes before the interruption (inside epoch 3).
SCRIPTED_ACC1 = {1: 10.0, 2: 30.0, 3: 20.0}


def teacher_run(root: Path, run_dir: Path, *extra: str):
    # 64 training images in batches of 32: two steps per epoch.
    return compose_config(["experiment=teacher_resnet56", "teacher=resnet8", "debug=fast", "trainer.epochs=3",
                           *tiny_run_overrides(root, run_dir.parent), "dataset.subset.train=64",
                           "dataset.subset.test=32", "dataset.batch_size=32", *extra], run_dir=run_dir)


@pytest.fixture
def scripted_accuracy(monkeypatch):
    """The trainer's test evaluation, with top-1 replaced by SCRIPTED_ACC1 of the epoch being evaluated."""
    real, where = trainer_module.evaluate, {}

    def evaluate(model, loader, device):
        scores = real(model, loader, device)
        epoch = len(read_metrics(where["run_dir"])) + 1  # metrics.jsonl holds the epochs before this one
        return {**scores, "acc1": SCRIPTED_ACC1[epoch]}

    monkeypatch.setattr(trainer_module, "evaluate", evaluate)
    return where


def best(run_dir: Path) -> tuple[dict, dict]:
    return (torch.load(run_dir / "model_best.pth", weights_only=True),
            json.loads((run_dir / "summary.json").read_text()))


def test_model_best_holds_the_best_epoch_also_after_a_resume_past_it(fake_cifar_root, tmp_path, scripted_accuracy):
    run_dir = tmp_path / "run"
    scripted_accuracy["run_dir"] = run_dir
    trainer = build_trainer(teacher_run(fake_cifar_root, run_dir), run_dir)
    steps = trainer.steps()
    with trainer.stop:
        for _ in range(5):  # epochs 1 and 2 done and checkpointed, one step into epoch 3
            next(steps)
    steps.close()
    at_epoch_2 = torch.load(run_dir / "model_best.pth", weights_only=True)
    assert (at_epoch_2["acc1"], at_epoch_2["epoch"], at_epoch_2["arch"]) == (30.0, 2, "resnet8")
    assert set(at_epoch_2) == {"model", "acc1", "epoch", "arch"}  # model.pth's format

    run_job(teacher_run(fake_cifar_root, run_dir, "resume=true"), run_dir)
    saved, summary = best(run_dir)
    assert (saved["acc1"], saved["epoch"]) == (summary["acc1_best"], summary["best_epoch"]) == (30.0, 2)
    assert all(torch.equal(saved["model"][k], at_epoch_2["model"][k]) for k in saved["model"])
    last = torch.load(run_dir / "model.pth", weights_only=True)
    assert last["epoch"] == 3 and not all(torch.equal(saved["model"][k], last["model"][k]) for k in last["model"])
