"""ILSVRC-2012 (ImageNet-1k) and other class-per-folder image trees, read lazily from disk.

ImageNet does not fit in memory the way CIFAR-100 does, so these datasets keep only the file
paths and labels and decode each image when it is asked for. They serve ``(image, label,
index)`` and expose ``targets``, ``classes`` and ``num_classes`` like ``InstanceDataset``, so
the trainer, samplers and memory-bank distillers treat both kinds alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader

from distillbench.data.errors import DatasetCorruptError, DatasetNotFoundError
from distillbench.data.instance import Transform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The usual script that moves the 50,000 flat validation images into one folder per class.
VALPREP_URL = "https://raw.githubusercontent.com/soumith/imagenetloader.torch/master/valprep.sh"


class ImageFileDataset(Dataset):
    """Images named by path, decoded on access and served as ``(image, label, index)``.

    Holding paths rather than pixels keeps datasets of a million images cheap to build and to
    copy into loader workers.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        transform: Transform | None = None,
        loader: Callable[[str], Image.Image] = default_loader,
    ) -> None:
        self.samples = list(samples)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.targets = np.fromiter((label for _, label in self.samples), dtype=np.int64, count=len(self.samples))
        if len(self.targets) and (self.targets.min() < 0 or self.targets.max() >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got [{self.targets.min()}, {self.targets.max()}]"
            )
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        path, label = self.samples[index]
        image: Any = self.loader(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label, index

    def labels_tensor(self) -> torch.Tensor:
        """All labels as one LongTensor, e.g. for samplers that draw negatives by class."""
        return torch.from_numpy(self.targets.copy())


def imagenet_train_transform(
    size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> transforms.Compose:
    """The training augmentation of the ImageNet tables in RepDistiller and mdistiller."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def imagenet_test_transform(
    size: int = 224,
    resize: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> transforms.Compose:
    """Shorter side to ``resize``, then the central ``size`` square, as published results use."""
    return transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


# Keeps pytest from collecting this function as a test in modules that import it by name.
imagenet_test_transform.__test__ = False  # type: ignore[attr-defined]


def build_imagenet(
    root: str | os.PathLike[str],
    train_transform: Transform | None = None,
    test_transform: Transform | None = None,
) -> tuple[ImageFileDataset, ImageFileDataset]:
    """The ILSVRC-2012 train and val splits from ``<root>/train/<wnid>`` and ``<root>/val/<wnid>``."""
    root = Path(root)
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir() or not _has_subdirectory(folder):
            raise DatasetNotFoundError(_imagenet_not_found_message(root, folder))
    train, val = build_image_folder(
        root,
        split_dirs=("train", "val"),
        train_transform=imagenet_train_transform() if train_transform is None else train_transform,
        test_transform=imagenet_test_transform() if test_transform is None else test_transform,
        name="ImageNet",
    )
    return train, val


def build_image_folder(
    root: str | os.PathLike[str],
    split_dirs: Sequence[str] = ("train", "val"),
    train_transform: Transform | None = None,
    test_transform: Transform | None = None,
    name: str = "image-folder dataset",
) -> tuple[ImageFileDataset, ...]:
    """One dataset per ``<root>/<split>/<class>/...`` tree, in ``split_dirs`` order.

    The first split is the training split and gets ``train_transform``; the rest get
    ``test_transform``. Every split must list the same classes, since a label index means a
    class only through that list.
    """
    root = Path(root)
    scanned = [scan_image_folder(root / split, name) for split in split_dirs]
    reference_split, (_, reference_classes) = split_dirs[0], scanned[0]
    for split, (_, classes) in zip(split_dirs[1:], scanned[1:], strict=True):
        check_same_classes(root / reference_split, reference_classes, root / split, classes, name)
    return tuple(
        ImageFileDataset(samples, classes, transform=train_transform if i == 0 else test_transform)
        for i, (samples, classes) in enumerate(scanned)
    )


def scan_image_folder(folder: Path, name: str) -> tuple[list[tuple[str, int]], list[str]]:
    """File paths with labels, and the sorted class names, of one class-per-folder tree."""
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"{name} not found: {folder} is not a directory. Expected one sub-folder per class "
            f"holding that class's images, i.e. {folder}/<class>/<image>. Set the dataset's root "
            "with dataset.root=/path."
        )
    try:
        tree = ImageFolder(str(folder))
    except FileNotFoundError as exc:
        raise DatasetCorruptError(
            f"{name} at {folder} is not a class-per-folder tree of images: {exc} Every class needs "
            "its own sub-folder with at least one image (.jpg, .jpeg, .png, ...) in it."
        ) from exc
    return tree.samples, tree.classes


def check_same_classes(
    reference: Path, reference_classes: Sequence[str], other: Path, other_classes: Sequence[str], name: str
) -> None:
    """Raise unless both splits list the same classes, naming those that differ."""
    if list(reference_classes) == list(other_classes):
        return
    only_reference = sorted(set(reference_classes) - set(other_classes))
    only_other = sorted(set(other_classes) - set(reference_classes))
    raise DatasetCorruptError(
        f"The {name} splits disagree on their classes: {reference} has {len(reference_classes)} and "
        f"{other} has {len(other_classes)}. Only in {reference}: {_preview(only_reference)}. "
        f"Only in {other}: {_preview(only_other)}. Labels are positions in the sorted class list, "
        "so both splits need the same class folders; a class folder missing from one split "
        "usually means an incomplete extraction or copy."
    )


def _preview(names: Sequence[str], limit: int = 10) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _has_subdirectory(folder: Path) -> bool:
    return any(entry.is_dir() for entry in folder.iterdir())


def _imagenet_not_found_message(root: Path, folder: Path) -> str:
    state = "does not exist" if not folder.is_dir() else "has no class sub-folders"
    return (
        f"ImageNet not found: {folder} {state}. Expected ILSVRC-2012 in ImageFolder layout, "
        f"{root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG, with one folder per class "
        f"named by its WordNet id (e.g. n01440764) in both splits. Set the root with "
        "dataset.root=/path. ImageNet cannot be downloaded automatically: it needs registration "
        "at https://image-net.org, from which ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
        "are fetched by hand. The training archive holds one tar per class, to extract each into "
        "train/<wnid>; the validation images come flat in one folder and must be moved into "
        f"val/<wnid> folders, e.g. by running the common valprep.sh ({VALPREP_URL}) inside the "
        "val folder."
    )
