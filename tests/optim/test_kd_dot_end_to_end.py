"""KD+DOT experiments take two training steps on generated data, on the CPU, built as the command line builds them:
the CIFAR-100 cell (resnet8 standing in for resnet32x4 -> resnet8x4 to keep it to seconds) and the Tiny-ImageNet
cell at 64x64 with its own networks. After two steps every student parameter holds both of DOT's momentum buffers,
so the trainer fed it the CE and the KD terms separately."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distillbench.build import build_trainer
from distillbench.models import create_model
from distillbench.optim import DOT
from tests.helpers import compose_config, tiny_run_overrides


def write_tiny_imagenet(root: Path, classes: int = 2, per_class: int = 2) -> None:
    """tiny-imagenet-200.zip's layout with random 64x64 JPEGs: wnids.txt, train/<wnid>/images, val/images + labels."""
    rng = np.random.default_rng(0)
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{c:08d}" for c in range(classes)]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for wnid in wnids:
        (folder / "train" / wnid / "images").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
        Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(
            folder / "val" / "images" / f"val_{wnid}.JPEG")
        lines.append(f"val_{wnid}.JPEG\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def random_teacher(arch: str, num_classes: int, folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / f"{arch}.pth"
    torch.save({"model": create_model(arch, num_classes=num_classes).state_dict()}, path)
    return path


def two_steps(cfg, run_dir: Path) -> tuple[object, list[dict[str, float]]]:
    trainer = build_trainer(cfg, run_dir)
    seen = []
    trainer.on_step = lambda step, terms: seen.append({k: float(v) for k, v in terms.items()})
    steps = trainer.steps()
    try:
        next(steps)
        next(steps)
    finally:
        steps.close()
    return trainer, seen


def assert_dot_trained(trainer, seen: list[dict[str, float]]) -> None:
    assert isinstance(trainer.optimizer, DOT)
    assert len(seen) == 2 and all(set(terms) == {"loss", "ce", "kd"} for terms in seen), seen
    assert all(math.isfinite(v) for terms in seen for v in terms.values()), seen
    for p in trainer.model.parameters():
        state = trainer.optimizer.state[p]
        assert state["momentum_buffer"] is not None and state["momentum_kd_buffer"] is not None


def test_cifar100_kd_dot_trains_two_steps(fake_cifar_root, tmp_path):
    teacher = random_teacher("resnet8", 100, tmp_path)
    run_dir = tmp_path / "runs" / "kd_dot" / "seed0"
    cfg = compose_config(["experiment=kd_dot_resnet32x4_8x4", "teacher=resnet8", "student=resnet8",
                          f"teacher.checkpoint={teacher}", *tiny_run_overrides(fake_cifar_root, tmp_path / "runs"),
                          "dataset.batch_size=16"], run_dir=run_dir)
    assert cfg.optim.delta == 0.075 and cfg.distiller.name == "kd_dot"
    assert_dot_trained(*two_steps(cfg, run_dir))


def test_tiny_imagenet_kd_dot_trains_two_steps_at_64px(tmp_path):
    write_tiny_imagenet(tmp_path / "data")
    teacher = random_teacher("ResNet18", 200, tmp_path)
    run_dir = tmp_path / "runs" / "kd_dot_tiny" / "seed0"
    overrides = [o for o in tiny_run_overrides(tmp_path / "data", tmp_path / "runs") if "verify_checksums" not in o]
    cfg = compose_config(["experiment=kd_dot_tinyimagenet_r18_shuv2", f"teacher.checkpoint={teacher}", *overrides,
                          "dataset.batch_size=2", "dataset.test_batch_size=2"], run_dir=run_dir)
    trainer, seen = two_steps(cfg, run_dir)
    assert trainer.train_loader.dataset[0][0].shape == (3, 64, 64)
    assert_dot_trained(trainer, seen)
