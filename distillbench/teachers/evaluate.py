"""Each fetched teacher's CIFAR-100 test top-1, beside the accuracy its config expects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from distillbench.catalog import CONFIG_DIR  # noqa: E402 (the configs inside the package)
from distillbench.data import build_cifar100
from distillbench.engine.evaluation import evaluate
from distillbench.models import create_model
from distillbench.weights import load_model_weights

NUM_CLASSES = 100


@dataclass(frozen=True)
class TeacherScore:
    arch: str
    acc1: float
    expected_acc1: float | None  # configs/teacher/<arch>.yaml; None where no published number exists


def expected_acc1(arch: str) -> float | None:
    """``expected_acc1`` of configs/teacher/<arch>.yaml (the published accuracy of the released teacher)."""
    path = CONFIG_DIR / "teacher" / f"{arch}.yaml"
    return OmegaConf.load(path).get("expected_acc1") if path.is_file() else None


def evaluate_teachers(checkpoints: dict[str, Path], data_root: Path, verify_checksums: bool = True,
                      download: bool = False, device: str | None = None, batch_size: int = 500,
                      num_workers: int = 2) -> list[TeacherScore]:
    """Top-1 on the CIFAR-100 test split under ``data_root`` (raises the dataset's own error when it is absent)."""
    _, test_set = build_cifar100(data_root, download=download, verify_checksums=verify_checksums)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loader = DataLoader(test_set, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    scores = []
    for arch, path in checkpoints.items():
        model = create_model(arch, num_classes=NUM_CLASSES)
        load_model_weights(model, path, arch)
        acc1 = evaluate(model.to(device), loader, device)["acc1"]
        scores.append(TeacherScore(arch, float(acc1), expected_acc1(arch)))
    return scores
