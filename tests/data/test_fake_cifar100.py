"""Generated CIFAR-100 files: the real format, balanced labels, a learnable signal."""

from __future__ import annotations

import pickle
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from distillbench.data import build_cifar100, write_fake_cifar100

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_fake_cifar100.py"


def _load(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def test_pickles_have_the_official_keys_and_types(tmp_path: Path) -> None:
    folder = write_fake_cifar100(tmp_path, n_train=130, n_test=101)
    assert folder == tmp_path / "cifar-100-python"
    for name, n, batch_label in (
        ("train", 130, "training batch 1 of 1"),
        ("test", 101, "testing batch 1 of 1"),
    ):
        entry = _load(folder / name)
        assert set(entry) == {"filenames", "batch_label", "fine_labels", "coarse_labels", "data"}
        assert entry["batch_label"] == batch_label
        assert entry["data"].dtype == np.uint8 and entry["data"].shape == (n, 3072)
        assert len(entry["filenames"]) == n and len(set(entry["filenames"])) == n
        assert all(type(label) is int for label in entry["fine_labels"] + entry["coarse_labels"])
        assert 0 <= min(entry["coarse_labels"]) and max(entry["coarse_labels"]) < 20
    meta = _load(folder / "meta")
    assert set(meta) == {"fine_label_names", "coarse_label_names"}
    assert len(meta["fine_label_names"]) == 100 and len(meta["coarse_label_names"]) == 20


@pytest.mark.parametrize("n", [100, 250, 1000])
def test_labels_are_balanced(tmp_path: Path, n: int) -> None:
    folder = write_fake_cifar100(tmp_path, n_train=n, n_test=100)
    counts = np.bincount(_load(folder / "train")["fine_labels"], minlength=100)
    assert counts.min() == n // 100
    assert counts.max() == -(-n // 100)


def test_labels_are_shuffled(tmp_path: Path) -> None:
    labels = _load(write_fake_cifar100(tmp_path, n_train=300) / "train")["fine_labels"]
    assert labels != [i % 100 for i in range(300)]


def test_seed_fixes_the_files(tmp_path: Path) -> None:
    first = write_fake_cifar100(tmp_path / "a", seed=1)
    again = write_fake_cifar100(tmp_path / "b", seed=1)
    other = write_fake_cifar100(tmp_path / "c", seed=2)
    for name in ("train", "test", "meta"):
        assert (first / name).read_bytes() == (again / name).read_bytes()
    assert (first / "train").read_bytes() != (other / "train").read_bytes()


def test_images_carry_a_class_signal(tmp_path: Path) -> None:
    write_fake_cifar100(tmp_path, n_train=2000, n_test=500)
    train, test = build_cifar100(tmp_path, verify_checksums=False)

    def mean_colour(data: np.ndarray) -> np.ndarray:
        return data.reshape(len(data), -1, 3).mean(axis=1)

    centroids = np.stack([mean_colour(train.data[train.targets == c]).mean(axis=0) for c in range(100)])
    distances = ((mean_colour(test.data)[:, None] - centroids[None]) ** 2).sum(axis=-1)
    accuracy = (distances.argmin(axis=1) == test.targets).mean()
    assert accuracy > 0.1  # chance is 0.01
    assert accuracy < 0.9  # weak: no trivial task
    assert train.data.std() > 30  # noisy images, not flat colour swatches


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    folder = write_fake_cifar100(tmp_path, n_train=100, n_test=100)
    before = (folder / "train").read_bytes()
    with pytest.raises(FileExistsError):
        write_fake_cifar100(tmp_path, seed=5)
    assert (folder / "train").read_bytes() == before
    write_fake_cifar100(tmp_path, seed=5, overwrite=True)
    assert (folder / "train").read_bytes() != before


def test_rejects_empty_splits(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_fake_cifar100(tmp_path, n_train=0)


def test_script_writes_and_prints_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(SCRIPT), "--root", str(tmp_path), "--train", "150", "--test", "120", "--seed", "4"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    out = capsys.readouterr().out
    assert str(tmp_path / "cifar-100-python") in out
    assert "dataset.verify_checksums=false" in out
    train, test = build_cifar100(tmp_path, verify_checksums=False)
    assert (len(train), len(test)) == (150, 120)
    expected = write_fake_cifar100(tmp_path / "direct", n_train=150, n_test=120, seed=4)
    assert (expected / "train").read_bytes() == (tmp_path / "cifar-100-python" / "train").read_bytes()
