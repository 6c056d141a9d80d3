"""Every distiller config trains for one epoch on generated CIFAR-100, on a same-family pair and a
cross-architecture pair, through the command line's ``run_job``."""

from __future__ import annotations

import math

import pytest
import torch

from distillbench.data import write_fake_cifar100
from distillbench.jobs import run_job
from distillbench.loggers import read_metrics
from distillbench.models import create_model
from tests.helpers import CONFIG_DIR, compose_config, tiny_run_overrides

METHODS = sorted(p.stem for p in (CONFIG_DIR / "distiller").glob("*.yaml") if p.stem != "none")
# Small stand-ins for resnet56 -> resnet20 and vgg13 -> MobileNetV2 of the tables.
PAIRS = {"same": ("resnet20", "resnet8"), "cross": ("vgg8", "MobileNetV2")}
# Methods that need equal feature widths cannot take the cross pair: FSP and KDSVD at every stage, CRCD's default
# gradient term at the pooled feature (N/A cells of the tables).
SAME_WIDTHS_ONLY = {"fsp", "crcd", "kdsvd"}
# Settings that shrink a method to 96 training images: fewer contrastive negatives than samples.
METHOD_OVERRIDES = {
    "crd": ["distiller.method.num_negatives=48"],
    "crd_kd": ["distiller.method.crd.num_negatives=48"],
    "rrd_momentum": ["distiller.method.num_negatives=48"],
    "crcd": ["distiller.method.num_negatives=32"],
    "wcord": ["distiller.method.num_negatives=48"],
    "wcord_kd": ["distiller.method.wcord.num_negatives=48"],
    # Two-stage methods: one init epoch instead of 30.
    "ab": ["distiller.method.init_epochs=1"],
    "ft": ["distiller.method.init_epochs=1"],
    "fsp": ["distiller.method.init_epochs=1"],
}


@pytest.fixture(scope="module")
def small_cifar_root(tmp_path_factory):
    """96 training images in batches of 32: three steps an epoch, enough samples for every method's negatives."""
    root = tmp_path_factory.mktemp("cifar_small")
    write_fake_cifar100(root, n_train=96, n_test=32, seed=0)
    return root


@pytest.fixture(scope="module")
def random_teachers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teachers")
    paths = {}
    for teacher, _ in PAIRS.values():
        torch.manual_seed(0)
        torch.save({"model": create_model(teacher, num_classes=100).state_dict()}, folder / f"{teacher}.pth")
        paths[teacher] = folder / f"{teacher}.pth"
    return paths


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("method", METHODS)
def test_one_epoch(method, pair, small_cifar_root, random_teachers, tmp_path):
    if pair == "cross" and method in SAME_WIDTHS_ONLY:
        pytest.skip("the method is undefined across different feature widths (an N/A cell of the tables)")
    teacher, student = PAIRS[pair]
    cfg = compose_config(
        [f"distiller={method}", f"teacher={teacher}", f"student={student}", "trainer.epochs=1",
         f"teacher.checkpoint={random_teachers[teacher]}", *METHOD_OVERRIDES.get(method, []),
         *tiny_run_overrides(small_cifar_root, tmp_path), "dataset.batch_size=32", "dataset.test_batch_size=32"],
        run_dir=tmp_path / "run",
    )
    summary = run_job(cfg, tmp_path / "run")
    (metrics,) = read_metrics(tmp_path / "run")
    terms = [k for k in metrics if k.startswith("train/loss_") and k != "train/loss_ce"]
    assert terms, "the distiller logged no loss term"
    assert all(math.isfinite(metrics[k]) for k in terms)
    assert summary["method"] == method
