"""Tiny-ImageNet-200 and STL-10 readers on small generated trees in the real on-disk layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image

from distillbench.data.errors import DatasetCorruptError, DatasetNotFoundError
from distillbench.data.transfer import (
    STL10_CLASSES,
    build_stl10,
    build_tiny_imagenet,
    transfer_test_transform,
    transfer_train_transform,
)
from distillbench.data.transforms import CIFAR100_MEAN

WNIDS = ("n02124075", "n01443537", "n04067472")  # deliberately unsorted, as in wnids.txt


def _jpeg(path: Path, rng: np.random.Generator) -> None:
    Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(path)


def _write_tiny_imagenet(root: Path, val_labels: list[str]) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for wnid in WNIDS:
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(4):
            _jpeg(images / f"{wnid}_{i}.JPEG", rng)
    (folder / "val" / "images").mkdir(parents=True)
    lines = []
    for i, wnid in enumerate(val_labels):
        _jpeg(folder / "val" / "images" / f"val_{i}.JPEG", rng)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    _write_tiny_imagenet(root, [WNIDS[0], WNIDS[2], WNIDS[1], WNIDS[0], WNIDS[2]])
    return root


def test_tiny_imagenet_splits(tiny_root: Path) -> None:
    train, val = build_tiny_imagenet(tiny_root, train_transform=None, test_transform=None)
    assert (len(train), len(val)) == (12, 5)
    assert train.classes == val.classes == sorted(WNIDS) and train.num_classes == 3
    assert np.bincount(train.targets).tolist() == [4, 4, 4]
    label = {wnid: sorted(WNIDS).index(wnid) for wnid in WNIDS}
    np.testing.assert_array_equal(val.targets, [label[w] for w in (WNIDS[0], WNIDS[2], WNIDS[1], WNIDS[0], WNIDS[2])])
    assert val.targets.dtype == np.int64
    for ds in (train, val):
        image, target, index = ds[2]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert (target, index) == (int(ds.targets[2]), 2)


def test_tiny_imagenet_raw_images_are_64px(tiny_root: Path) -> None:
    train, val = build_tiny_imagenet(tiny_root, train_transform=lambda im: im.size, test_transform=lambda im: im.size)
    assert train[0][0] == val[4][0] == (64, 64)


def test_tiny_imagenet_size_parameter(tiny_root: Path) -> None:
    train, val = build_tiny_imagenet(tiny_root, size=48)
    assert train[0][0].shape == val[0][0].shape == (3, 48, 48)


def test_tiny_imagenet_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        build_tiny_imagenet(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "tiny-imagenet-200" / "wnids.txt") in message
    assert "val_annotations.txt" in message and "train/<wnid>/images/*.JPEG" in message
    assert "dataset.root=/path" in message and "tiny-imagenet-200.zip" in message


def test_tiny_imagenet_unknown_val_wnid(tmp_path: Path) -> None:
    _write_tiny_imagenet(tmp_path, [WNIDS[0], "n00000000"])
    with pytest.raises(DatasetCorruptError, match="line 2"):
        build_tiny_imagenet(tmp_path)


def test_tiny_imagenet_train_folders_must_match_wnids(tmp_path: Path) -> None:
    folder = _write_tiny_imagenet(tmp_path, [WNIDS[0]])
    (folder / "wnids.txt").write_text("\n".join((*WNIDS, "n09999999")))
    with pytest.raises(DatasetCorruptError, match="n09999999"):
        build_tiny_imagenet(tmp_path)


def _write_stl10(root: Path, n_train: int, n_test: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Images (N, 96, 96, 3) and labels 0..9, written as STL-10 stores them: planes column by column."""
    rng = np.random.default_rng(1)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        written[split] = (images, labels)
    return written


@pytest.fixture(scope="module")
def stl_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    root = tmp_path_factory.mktemp("stl")
    return root, _write_stl10(root, n_train=6, n_test=4)


def test_stl10_reads_written_images(stl_root: tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]) -> None:
    root, written = stl_root
    train, test = build_stl10(root)
    for ds, split in ((train, "train"), (test, "test")):
        images, labels = written[split]
        np.testing.assert_array_equal(ds.data, images)
        np.testing.assert_array_equal(ds.targets, labels)
        assert ds.classes == list(STL10_CLASSES) and ds.num_classes == 10
        image, label, index = ds[3]
        assert image.shape == (3, 32, 32) and (label, index) == (int(labels[3]), 3)


def test_stl10_agrees_with_torchvision(
    stl_root: tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = stl_root
    monkeypatch.setattr(torchvision.datasets.STL10, "_check_integrity", lambda self: True)
    train, test = build_stl10(root)
    for ds, split in ((train, "train"), (test, "test")):
        reference = torchvision.datasets.STL10(str(root), split=split)
        np.testing.assert_array_equal(ds.data, reference.data.transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(ds.targets, reference.labels)
        plain = build_stl10(root, train_transform=np.asarray, test_transform=np.asarray)[split == "test"]
        np.testing.assert_array_equal(plain[1][0], np.asarray(reference[1][0]))


def test_stl10_class_names_file(tmp_path: Path) -> None:
    _write_stl10(tmp_path, n_train=1, n_test=1)
    names = [f"c{i}" for i in range(10)]
    (tmp_path / "stl10_binary" / "class_names.txt").write_text("\n".join(names))
    assert build_stl10(tmp_path)[0].classes == names


def test_stl10_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        build_stl10(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "stl10_binary") in message and "train_X.bin" in message
    assert "dataset.root=/path" in message and "stl10_binary.tar.gz" in message


def test_stl10_truncated(tmp_path: Path) -> None:
    _write_stl10(tmp_path, n_train=2, n_test=1)
    path = tmp_path / "stl10_binary" / "train_X.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetCorruptError, match="truncated"):
        build_stl10(tmp_path)


def test_transfer_transforms() -> None:
    image = Image.new("RGB", (96, 96), color=(10, 200, 30))
    assert transfer_train_transform()(image).shape == (3, 32, 32)
    assert transfer_test_transform()(image).shape == (3, 32, 32)
    assert transfer_test_transform(size=64)(image).shape == (3, 64, 64)
    assert tuple(transfer_test_transform().transforms[-1].mean) == CIFAR100_MEAN
