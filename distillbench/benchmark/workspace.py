"""What every benchmark script starts from: generated CIFAR-100 files and a randomly initialised teacher on disk,
and where it writes its figures."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def generated_cell(folder: Path, images: int, test_images: int, teacher: str) -> tuple[Path, Path]:
    """CIFAR-100-format files of ``images``/``test_images`` random images and a seeded ``teacher`` checkpoint in
    ``folder``; returns (data root, teacher file)."""
    from distillbench.data import write_fake_cifar100
    from distillbench.models import create_model

    write_fake_cifar100(folder / "data", n_train=images, n_test=test_images, seed=0)
    torch.manual_seed(0)
    teacher_file = folder / "teacher.pth"
    torch.save({"model": create_model(teacher, num_classes=100).state_dict()}, teacher_file)
    return folder / "data", teacher_file


def write_json(path: Path | None, result: dict) -> None:
    """``result`` as indented JSON in ``path`` (nothing when None), folders made as needed."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
