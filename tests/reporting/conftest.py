"""Fabricated run directories, as the trainer leaves them: config.yaml, run.json, metrics.jsonl, summary.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "results" / "paper" / "published.yaml"

CRD = {"seeds": 1, "report": "last_epoch", "paper": "crd"}
DKD = {"seeds": 5, "report": "best_epoch", "paper": "dkd"}
COMMIT = "4db8f62a1b2c3d4e5f60718293a4b5c6d7e8f901"  # the code revision run.json records


def _hash(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def write_run(root: Path, experiment: str, seed: int, last: float, best: float, *, method: str = "kd",
              teacher: str = "resnet32x4", student: str = "resnet8x4", role: str = "student",
              variant: str = "default", overrides: tuple[str, ...] = (), precision: str = "float32",
              generated: bool = False, finished: bool = True, epochs: int = 240, epochs_done: int | None = None,
              protocol: dict | None = None, run_record: bool = True, dataset: str = "cifar100",
              group_salt: str = "", subdir: str | None = None, commit: str = COMMIT, dirty: bool = False) -> Path:
    """One run directory; its group hash follows (experiment, variant, precision, data, salt)."""
    run_dir = root / (subdir or f"{experiment}/{variant}") / f"seed{seed}"
    run_dir.mkdir(parents=True)
    group = _hash(experiment, variant, precision, generated, group_salt)
    distiller = "none" if role == "teacher" or method == "none" else method
    config = {"name": experiment, "seed": seed, "role": role, "dataset": {"name": dataset},
              "teacher": {"arch": teacher}, "student": {"arch": student}, "distiller": {"name": distiller},
              "trainer": {"epochs": epochs, "precision": precision}, "protocol": protocol}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if run_record:
        run = {"format": 1, "experiment": experiment, "variant": variant, "overrides": list(overrides),
               "identity": _hash(group, seed), "group": group, "seed": seed, "identity_fields": {},
               "resolved": {"trainer.device_type": "cpu", "trainer.precision": precision},
               "data": {"generated": generated},
               "environment": {"git_commit": commit, "git_dirty": dirty}, "created": "2025-01-01T00:00:00"}
        (run_dir / "run.json").write_text(json.dumps(run))
    done = epochs if epochs_done is None else epochs_done
    curve = [best - 1.0] * max(done - 2, 0) + [best, last][: done]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "test/acc1": a}) + "\n"
                                                   for e, a in enumerate(curve[-done:] if done else [])))
    if finished:
        arch = teacher if role == "teacher" else student
        summary = {"acc1_last": last, "acc1_best": best, "best_epoch": done - 1, "epochs": epochs, "seed": seed,
                   "name": experiment, "job_type": "teacher" if role == "teacher" else "student",
                   "method": distiller, "arch": arch, "dataset": dataset, "eval_split": "test"}
        if role != "teacher" and distiller != "none":
            summary.update(teacher=teacher, student=student)
        if run_record:
            summary.update(experiment=experiment, variant=variant, identity=_hash(group, seed), group=group,
                           precision=precision, data_generated=generated, finished=True)
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


@pytest.fixture
def runs(tmp_path) -> Path:
    """A CIFAR-100 folder: KD with 3 seeds (and a variant), DKD with 2 of its paper's 5, a teacher and a student."""
    root = tmp_path / "runs"
    for seed, acc in enumerate([73.0, 73.4, 73.2]):
        write_run(root, "kd_resnet32x4_8x4", seed, acc, acc + 0.3, protocol=CRD)
    for seed, acc in enumerate([75.0, 75.2]):  # a higher lr: its own row, never mixed into the cell
        write_run(root, "kd_resnet32x4_8x4", seed, acc, acc + 0.3, variant="optim.lr=0.1",
                  overrides=("optim.lr=0.1",), protocol=CRD)
    for seed, acc in enumerate([70.0, 70.1]):  # far below DKD's published 76.32 (best epoch)
        write_run(root, "dkd_resnet32x4_8x4", seed, acc - 0.2, acc, method="dkd", protocol=DKD)
    write_run(root, "teacher_resnet32x4", 0, 79.5, 79.6, role="teacher", method="none")
    write_run(root, "vanilla_resnet8x4", 0, 72.4, 72.7, method="none", protocol=CRD)
    return root
