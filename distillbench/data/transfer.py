"""Tiny-ImageNet-200 and STL-10, the transfer datasets of CRD's and RRD's linear probe.

The probe freezes a student trained on CIFAR-100 and fits a linear classifier on its features
of another dataset. The student only ever saw 32x32 images normalised with CIFAR-100's
statistics, so the default transforms downsample every image to ``size`` (32) and normalise
as in CIFAR-100 training; the training split also gets CIFAR's padded crop and flip.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torchvision import transforms

from distillbench.data.errors import DatasetCorruptError, DatasetNotFoundError
from distillbench.data.imagenet import ImageFileDataset, check_same_classes, scan_image_folder
from distillbench.data.instance import InstanceDataset, Transform
from distillbench.data.transforms import CIFAR100_MEAN, CIFAR100_STD

TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
TINY_IMAGENET_SIZE = 64

STL10_FOLDER = "stl10_binary"
STL10_SIZE = 96
STL10_FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


def transfer_train_transform(
    size: int = 32,
    padding: int = 4,
    mean: Sequence[float] = CIFAR100_MEAN,
    std: Sequence[float] = CIFAR100_STD,
) -> transforms.Compose:
    """Downsample to the student's input size, then CIFAR's padded random crop and flip."""
    return transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.RandomCrop(size, padding=padding),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def transfer_test_transform(
    size: int = 32, mean: Sequence[float] = CIFAR100_MEAN, std: Sequence[float] = CIFAR100_STD
) -> transforms.Compose:
    """Downsample to the student's input size and normalise, nothing random."""
    return transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(), transforms.Normalize(mean, std)])


# Keeps pytest from collecting this function as a test in modules that import it by name.
transfer_test_transform.__test__ = False  # type: ignore[attr-defined]


def build_tiny_imagenet(
    root: str | os.PathLike[str],
    train_transform: Transform | None = None,
    test_transform: Transform | None = None,
    size: int = 32,
) -> tuple[ImageFileDataset, ImageFileDataset]:
    """Tiny-ImageNet-200's train and val splits from ``<root>/tiny-imagenet-200``.

    Images stay on disk (64x64 JPEGs); labels are positions in the sorted ``wnids.txt``,
    the same order as an ImageFolder over ``train`` gives. ``size`` sets the default
    transforms' output side.
    """
    folder = Path(root) / TINY_IMAGENET_FOLDER
    wnids_file = folder / "wnids.txt"
    annotations = folder / "val" / "val_annotations.txt"
    missing = [p for p in (wnids_file, annotations) if not p.is_file()]
    missing += [p for p in (folder / "train", folder / "val" / "images") if not p.is_dir()]
    if missing:
        raise DatasetNotFoundError(_tiny_imagenet_not_found_message(folder, missing))

    classes = sorted(wnids_file.read_text().split())
    train_samples, train_classes = scan_image_folder(folder / "train", "Tiny-ImageNet")
    check_same_classes(wnids_file, classes, folder / "train", train_classes, "Tiny-ImageNet")
    val_samples = _read_val_annotations(annotations, folder / "val" / "images", classes)
    train = ImageFileDataset(
        train_samples, classes, transform=transfer_train_transform(size) if train_transform is None else train_transform
    )
    val = ImageFileDataset(
        val_samples, classes, transform=transfer_test_transform(size) if test_transform is None else test_transform
    )
    return train, val


def _read_val_annotations(path: Path, images: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, label) per line of ``val_annotations.txt``: filename, wnid, then a bounding box."""
    label_of = {wnid: label for label, wnid in enumerate(classes)}
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise DatasetCorruptError(
                f"{path}, line {number}: expected '<filename>\\t<wnid>\\t...' with a wnid listed in "
                f"wnids.txt, got {line!r}. Re-extract tiny-imagenet-200.zip."
            )
        image = images / fields[0]
        if not image.is_file():
            raise DatasetCorruptError(
                f"{path}, line {number} names {fields[0]}, which is not in {images}. Re-extract tiny-imagenet-200.zip."
            )
        samples.append((str(image), label_of[fields[1]]))
    return samples


def _tiny_imagenet_not_found_message(folder: Path, missing: list[Path]) -> str:
    return (
        f"Tiny-ImageNet not found: looked in {folder} and did not find "
        f"{', '.join(str(p) for p in missing)}. Expected the layout of tiny-imagenet-200.zip "
        f"(http://cs231n.stanford.edu/tiny-imagenet-200.zip) extracted into root={folder.parent}: "
        f"{folder}/wnids.txt, {folder}/train/<wnid>/images/*.JPEG, {folder}/val/images/*.JPEG and "
        f"{folder}/val/val_annotations.txt. Set the root with dataset.root=/path."
    )


def build_stl10(
    root: str | os.PathLike[str],
    train_transform: Transform | None = None,
    test_transform: Transform | None = None,
    size: int = 32,
) -> tuple[InstanceDataset, InstanceDataset]:
    """STL-10's labelled train and test splits from torchvision's ``<root>/stl10_binary`` files.

    Read here rather than by ``torchvision.datasets.STL10``, which refuses files whose md5
    differs from the official archive's; the bytes are decoded the same way. ``size`` sets the
    default transforms' output side.
    """
    folder = Path(root) / STL10_FOLDER
    missing = [name for files in STL10_FILES.values() for name in files if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(_stl10_not_found_message(folder, missing))
    names_file = folder / "class_names.txt"
    classes = names_file.read_text().splitlines() if names_file.is_file() else list(STL10_CLASSES)
    if len(classes) != len(STL10_CLASSES):
        raise DatasetCorruptError(f"{names_file} lists {len(classes)} classes, expected {len(STL10_CLASSES)}.")
    train = InstanceDataset(
        *_read_stl10_split(folder, *STL10_FILES["train"]),
        transform=transfer_train_transform(size) if train_transform is None else train_transform,
        classes=classes,
    )
    test = InstanceDataset(
        *_read_stl10_split(folder, *STL10_FILES["test"]),
        transform=transfer_test_transform(size) if test_transform is None else test_transform,
        classes=classes,
    )
    return train, test


def _read_stl10_split(folder: Path, images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as (N, 96, 96, 3) uint8 and labels shifted from 1..10 to 0..9.

    Each stored image is three colour planes, each written column by column, so a plane
    read row-major comes out transposed.
    """
    raw = np.fromfile(folder / images_name, dtype=np.uint8)
    labels = np.fromfile(folder / labels_name, dtype=np.uint8).astype(np.int64) - 1
    image_bytes = 3 * STL10_SIZE * STL10_SIZE
    if raw.size % image_bytes or raw.size // image_bytes != len(labels):
        raise DatasetCorruptError(
            f"{folder / images_name} holds {raw.size} bytes and {folder / labels_name} {len(labels)} labels; "
            f"expected {image_bytes} bytes per labelled image. A file may be truncated: re-extract "
            "stl10_binary.tar.gz."
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(STL10_CLASSES)):
        raise DatasetCorruptError(f"{folder / labels_name} has labels outside 1..{len(STL10_CLASSES)}.")
    images = raw.reshape(-1, 3, STL10_SIZE, STL10_SIZE).transpose(0, 3, 2, 1)
    return np.ascontiguousarray(images), labels


def _stl10_not_found_message(folder: Path, missing: list[str]) -> str:
    return (
        f"STL-10 not found: looked in {folder} and did not find {', '.join(missing)}. Expected the "
        f"layout of stl10_binary.tar.gz (http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz), "
        f"as torchvision.datasets.STL10(root, download=True) leaves it: {folder}/train_X.bin, "
        f"train_y.bin, test_X.bin and test_y.bin, with root={folder.parent}. Set the root with "
        "dataset.root=/path."
    )
