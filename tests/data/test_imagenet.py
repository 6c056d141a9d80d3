"""build_imagenet and build_image_folder on small generated ImageFolder trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distillbench.data.errors import DatasetCorruptError, DatasetNotFoundError
from distillbench.data.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_image_folder,
    build_imagenet,
    imagenet_test_transform,
    imagenet_train_transform,
)

WNIDS = ("n01440764", "n01443537", "n01484850")


def _write_split(folder: Path, classes: tuple[str, ...], per_class: int, size: tuple[int, int] = (40, 30)) -> None:
    rng = np.random.default_rng(0)
    for wnid in classes:
        (folder / wnid).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / wnid / f"{wnid}_{i}.JPEG")


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    _write_split(root / "train", WNIDS, per_class=4)
    _write_split(root / "val", WNIDS, per_class=2)
    return root


def test_splits_sizes_labels_and_classes(imagenet_root: Path) -> None:
    train, val = build_imagenet(imagenet_root, train_transform=None, test_transform=None)
    assert (len(train), len(val)) == (12, 6)
    for ds in (train, val):
        assert ds.classes == list(WNIDS)
        assert ds.num_classes == 3
        assert ds.targets.dtype == np.int64
        assert np.bincount(ds.targets).tolist() == [len(ds) // 3] * 3
        assert torch.equal(ds.labels_tensor(), torch.from_numpy(ds.targets))
    np.testing.assert_array_equal(val.targets, [0, 0, 1, 1, 2, 2])


def test_getitem_returns_image_label_index(imagenet_root: Path) -> None:
    train, val = build_imagenet(imagenet_root)
    image, label, index = train[5]
    assert (index, label) == (5, int(train.targets[5]))
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    image, label, index = val[3]
    assert (index, label) == (3, 1)
    assert image.shape == (3, 224, 224)


def test_custom_transform_sees_pil_image(imagenet_root: Path) -> None:
    train, _ = build_imagenet(imagenet_root, train_transform=lambda im: im.size)
    assert train[0][0] == (40, 30)


def test_transforms_match_recipe() -> None:
    image = Image.new("RGB", (300, 260), color=(124, 116, 104))
    assert imagenet_train_transform()(image).shape == (3, 224, 224)
    assert imagenet_test_transform()(image).shape == (3, 224, 224)
    assert imagenet_test_transform(size=112, resize=128)(image).shape == (3, 112, 112)
    normalize = imagenet_test_transform().transforms[-1]
    assert tuple(normalize.mean) == IMAGENET_MEAN and tuple(normalize.std) == IMAGENET_STD
    resize, crop = imagenet_test_transform().transforms[:2]
    assert resize.size == 256 and tuple(crop.size) == (224, 224)


def test_missing_root_says_how_to_get_imagenet(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        build_imagenet(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "train") in message
    assert "train/<wnid>/*.JPEG" in message and "val/<wnid>/*.JPEG" in message
    assert "dataset.root=/path" in message
    assert "image-net.org" in message and "cannot be downloaded automatically" in message
    assert "valprep" in message


def test_flat_val_folder_points_to_valprep(tmp_path: Path) -> None:
    _write_split(tmp_path / "train", WNIDS, per_class=1)
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetNotFoundError, match="valprep") as info:
        build_imagenet(tmp_path)
    assert "has no class sub-folders" in str(info.value)


def test_class_mismatch_names_the_differing_classes(tmp_path: Path) -> None:
    _write_split(tmp_path / "train", WNIDS, per_class=1)
    _write_split(tmp_path / "val", (WNIDS[0], WNIDS[1], "n09999999"), per_class=1)
    with pytest.raises(DatasetCorruptError) as info:
        build_imagenet(tmp_path)
    message = str(info.value)
    assert f"Only in {tmp_path / 'train'}: {WNIDS[2]}." in message
    assert f"Only in {tmp_path / 'val'}: n09999999." in message


def test_empty_class_folder_is_corrupt(tmp_path: Path) -> None:
    _write_split(tmp_path / "train", WNIDS, per_class=1)
    _write_split(tmp_path / "val", WNIDS[:2], per_class=1)
    (tmp_path / "val" / WNIDS[2]).mkdir()
    with pytest.raises(DatasetCorruptError, match="at least one image"):
        build_imagenet(tmp_path)


def test_generic_image_folder_with_three_splits(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        _write_split(tmp_path / split, ("a", "b"), per_class=2)
    train, val, test = build_image_folder(tmp_path, split_dirs=("train", "val", "test"))
    assert [len(ds) for ds in (train, val, test)] == [4, 4, 4]
    image, label, index = test[3]
    assert isinstance(image, Image.Image) and (label, index) == (1, 3)
    with pytest.raises(DatasetNotFoundError, match="dataset.root"):
        build_image_folder(tmp_path, split_dirs=("train", "holdout"))
