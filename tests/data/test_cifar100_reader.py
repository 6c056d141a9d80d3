"""build_cifar100 on generated files: layout, labels, errors that say how to fix them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
import torchvision.datasets.cifar

from distillbench.data import (
    CIFAR100_MD5,
    DatasetCorruptError,
    DatasetNotFoundError,
    build_cifar100,
    write_fake_cifar100,
)
from distillbench.data import cifar100 as cifar100_module
from distillbench.data import transforms as recipe


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar100(root, n_train=250, n_test=120, seed=3)
    return root


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_fake_files_round_trip(fake_root: Path) -> None:
    train, test = build_cifar100(str(fake_root), verify_checksums=False)
    assert len(train) == 250 and len(test) == 120
    for ds in (train, test):
        assert ds.data.shape == (len(ds), 32, 32, 3)
        assert ds.data.dtype == np.uint8
        assert ds.num_classes == 100
        assert ds.classes == [f"fake_class_{c:02d}" for c in range(100)]
        assert set(ds.targets.tolist()) == set(range(100))
    for i in (0, 7, 249):
        image, label, index = train[i]
        assert index == i
        assert label == train.targets[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32


def test_pixels_are_deplanarised(fake_root: Path) -> None:
    import pickle

    with open(fake_root / "cifar-100-python" / "test", "rb") as f:
        rows = pickle.load(f, encoding="latin1")["data"]
    _, test = build_cifar100(fake_root, verify_checksums=False)
    # Row layout: 1024 red values, 1024 green, 1024 blue, each plane row-major.
    assert test.data[5, 2, 3, 0] == rows[5, 0 * 1024 + 2 * 32 + 3]
    assert test.data[5, 2, 3, 1] == rows[5, 1 * 1024 + 2 * 32 + 3]
    assert test.data[5, 31, 30, 2] == rows[5, 2 * 1024 + 31 * 32 + 30]


def test_default_transforms_are_the_recipe(fake_root: Path) -> None:
    train, test = build_cifar100(fake_root, verify_checksums=False)
    assert [type(t) for t in train.transform.transforms] == [
        type(t) for t in recipe.train_transform().transforms
    ]
    assert [type(t) for t in test.transform.transforms] == [
        type(t) for t in recipe.test_transform().transforms
    ]
    image = test[0][0]
    raw = torch.from_numpy(test.data[0]).permute(2, 0, 1).float() / 255
    mean = torch.tensor(recipe.CIFAR100_MEAN).view(3, 1, 1)
    std = torch.tensor(recipe.CIFAR100_STD).view(3, 1, 1)
    assert torch.allclose(image, (raw - mean) / std, atol=1e-6)


def test_custom_transforms_are_used(fake_root: Path) -> None:
    train, test = build_cifar100(fake_root, verify_checksums=False, train_transform=str, test_transform=repr)
    assert train.transform is str and test.transform is repr


def test_missing_dataset_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        build_cifar100(str(tmp_path))
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "cifar-100-python") in message
    for part in ("<root>/cifar-100-python/train", "test", "meta", "cifar-100-python.tar.gz"):
        assert part in message
    assert "dataset.root=" in message
    assert "dataset.download=true" in message
    assert "\n" not in message


def test_partly_missing_dataset_names_the_missing_file(fake_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "meta"):
        (folder / name).write_bytes((fake_root / "cifar-100-python" / name).read_bytes())
    with pytest.raises(DatasetNotFoundError, match="did not find test"):
        build_cifar100(tmp_path, verify_checksums=False)


def test_download_fetches_only_when_missing(
    fake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple] = []

    def fake_torchvision_cifar100(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        write_fake_cifar100(root, n_train=100, n_test=100)

    monkeypatch.setattr(cifar100_module, "CIFAR100", fake_torchvision_cifar100)
    train, _ = build_cifar100(str(tmp_path), download=True, verify_checksums=False)
    assert calls == [(str(tmp_path), True, True)]
    assert len(train) == 100

    calls.clear()
    build_cifar100(fake_root, download=True, verify_checksums=False)
    assert calls == []


def test_checksum_mismatch_names_file_and_both_md5s(fake_root: Path) -> None:
    with pytest.raises(DatasetCorruptError) as info:
        build_cifar100(fake_root)
    message = str(info.value)
    train_file = fake_root / "cifar-100-python" / "train"
    assert str(train_file) in message
    assert CIFAR100_MD5["train"] in message
    assert _md5(train_file) in message
    assert "dataset.verify_checksums=false" in message
    assert "scripts/make_fake_cifar100.py" in message


def test_matching_checksums_pass(fake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = fake_root / "cifar-100-python"
    actual = {name: _md5(folder / name) for name in ("train", "test", "meta")}
    monkeypatch.setattr(cifar100_module, "CIFAR100_MD5", actual)
    train, test = build_cifar100(fake_root, verify_checksums=True)
    assert (len(train), len(test)) == (250, 120)
    monkeypatch.setitem(actual, "meta", "0" * 32)
    with pytest.raises(DatasetCorruptError, match="meta"):
        build_cifar100(fake_root, verify_checksums=True)


def test_official_md5s() -> None:
    assert CIFAR100_MD5 == {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    }


def test_file_md5_reads_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 1000)
    assert cifar100_module.file_md5(path, chunk_size=1000) == _md5(path)


@pytest.mark.parametrize("name", ["train", "test", "meta"])
def test_truncated_file_is_reported(tmp_path: Path, name: str) -> None:
    folder = write_fake_cifar100(tmp_path, n_train=120, n_test=100)
    path = folder / name
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetCorruptError, match="truncated") as info:
        build_cifar100(tmp_path, verify_checksums=False)
    assert str(path) in str(info.value)


def test_pickle_without_cifar_keys_is_reported(tmp_path: Path) -> None:
    import pickle

    folder = write_fake_cifar100(tmp_path, n_train=120, n_test=100)
    with open(folder / "test", "wb") as f:
        pickle.dump({"labels": [0]}, f)
    with pytest.raises(DatasetCorruptError, match="lacks data, fine_labels"):
        build_cifar100(tmp_path, verify_checksums=False)


def test_torchvision_reads_fake_files_identically(fake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torchvision would reject the files on md5 alone; everything else is its own reader.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    ours = build_cifar100(fake_root, verify_checksums=False)
    for train, dataset in zip((True, False), ours, strict=True):
        theirs = torchvision.datasets.CIFAR100(str(fake_root), train=train)
        assert np.array_equal(theirs.data, dataset.data)
        assert theirs.targets == dataset.targets.tolist()
        assert theirs.classes == dataset.classes
