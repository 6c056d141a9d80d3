"""Runs side by side in one process end exactly as the same runs trained alone, and one failing run
does not take the others down."""

from __future__ import annotations

import pytest
import torch

from distillbench.build import build_trainer
from distillbench.engine.side_by_side import fit_side_by_side
from distillbench.engine.trainer import DivergenceError
from distillbench.jobs import run_job, run_side_by_side
from distillbench.loggers import read_metrics
from distillbench.models import create_model
from tests.helpers import compose_config, tiny_run_overrides


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "resnet8.pth"
    torch.manual_seed(0)
    torch.save({"model": create_model("resnet8", num_classes=100).state_dict()}, path)
    return path


def overrides(root, runs, teacher_file):
    return ["distiller=crd", "distiller.method.num_negatives=64", "teacher=resnet8", "student=resnet8",
            f"teacher.checkpoint={teacher_file}", "trainer.epochs=2", "dataset.loader=device",
            *tiny_run_overrides(root, runs)]


def test_side_by_side_equals_alone(fake_cifar_root, teacher_file, tmp_path) -> None:
    alone = {}
    for seed in (0, 1):
        run_dir = tmp_path / "alone" / f"seed{seed}"
        cfg = compose_config([*overrides(fake_cifar_root, tmp_path, teacher_file), f"seed={seed}"], run_dir=run_dir)
        alone[seed] = run_job(cfg, run_dir)
    cfg = compose_config([*overrides(fake_cifar_root, tmp_path, teacher_file), "side_by_side_seeds=[0,1]"],
                         run_dir=tmp_path / "packed" / "seed0")
    packed = run_side_by_side(cfg, tmp_path / "packed" / "seed0")
    for seed, summary in zip((0, 1), packed, strict=True):
        assert summary["seed"] == seed
        assert summary["acc1_last"] == alone[seed]["acc1_last"]
        ours = read_metrics(tmp_path / "packed" / f"seed{seed}")
        theirs = read_metrics(tmp_path / "alone" / f"seed{seed}")
        assert [m["train/loss"] for m in ours] == [m["train/loss"] for m in theirs]
        a = torch.load(tmp_path / "packed" / f"seed{seed}" / "model.pth", weights_only=True)["model"]
        b = torch.load(tmp_path / "alone" / f"seed{seed}" / "model.pth", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[m["train/loss"] for m in read_metrics(tmp_path / "alone" / f"seed{seed}")] for seed in (0, 1)]
    assert losses[0] != losses[1]  # the seeds really differ, so the comparison above means something

def test_a_failing_run_lets_the_others_finish(fake_cifar_root, teacher_file, tmp_path) -> None:
    good = compose_config(overrides(fake_cifar_root, tmp_path, teacher_file), run_dir=tmp_path / "good")
    bad = compose_config([*overrides(fake_cifar_root, tmp_path, teacher_file), "student.lr=1e30",
                          "trainer.check_finite_every=1"], run_dir=tmp_path / "bad")
    trainers = [build_trainer(bad, tmp_path / "bad"), build_trainer(good, tmp_path / "good")]
    with pytest.raises(DivergenceError):
        fit_side_by_side(trainers)
    assert (tmp_path / "good" / "summary.json").is_file()
    assert not (tmp_path / "bad" / "summary.json").exists()
