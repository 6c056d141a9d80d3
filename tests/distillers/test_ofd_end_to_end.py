"""The OFD experiment takes two training steps on generated CIFAR-100, on the CPU, built as the command line
builds it: the connectors train with the student, and the teacher runs in train mode (its BN running
statistics move), as in mdistiller's OFD. resnet20 -> resnet8 stand in for resnet32x4 -> resnet8x4 to keep
it to seconds (tests/test_every_experiment_builds.py runs the real pair)."""

from __future__ import annotations

import math

import torch

from distillbench.build import build_trainer
from distillbench.models import create_model
from tests.helpers import compose_config, tiny_run_overrides


def test_ofd_experiment_trains_two_steps(fake_cifar_root, tmp_path):
    torch.manual_seed(0)
    teacher_file = tmp_path / "resnet20.pth"
    torch.save({"model": create_model("resnet20", num_classes=100).state_dict()}, teacher_file)
    run_dir = tmp_path / "runs" / "ofd" / "seed0"
    cfg = compose_config(
        [
            "experiment=ofd_resnet32x4_8x4",
            "teacher=resnet20",
            "student=resnet8",
            f"teacher.checkpoint={teacher_file}",
            *tiny_run_overrides(fake_cifar_root, tmp_path / "runs"),
            "dataset.batch_size=16",
        ],
        run_dir=run_dir,
    )
    trainer = build_trainer(cfg, run_dir)
    seen = []
    trainer.on_step = lambda step, terms: seen.append({k: float(v) for k, v in terms.items()})
    teacher_bn = trainer.teacher.layer3[-1].bn2
    steps = trainer.steps()
    try:
        next(steps)
        connectors = [p.detach().clone() for p in trainer.distiller.connectors.parameters()]
        running_mean = teacher_bn.running_mean.clone()
        next(steps)
    finally:
        steps.close()
    assert len(seen) == 2 and all("ofd" in terms and "ce" in terms for terms in seen), seen
    assert all(math.isfinite(v) and v > 0 for terms in seen for v in terms.values()), seen
    after = list(trainer.distiller.connectors.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(connectors, after, strict=True))
    assert not torch.equal(running_mean, teacher_bn.running_mean)
    assert len(trainer.distiller.margins()) == 3
