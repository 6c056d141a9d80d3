"""CIFAR-100 read from torchvision's on-disk layout by our own reader.

torchvision's ``CIFAR100`` refuses any file whose md5 differs from the official one, which
rules out generated stand-in files. This reader checks the md5 as a separate, optional step
(``verify_checksums``) and otherwise reads the same pickles the same way.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import CIFAR100

from distillbench.data import transforms
from distillbench.data.errors import DatasetCorruptError, DatasetNotFoundError
from distillbench.data.instance import InstanceDataset, Transform
from distillbench.storage import file_digest

BASE_FOLDER = "cifar-100-python"
NUM_CLASSES = 100
IMAGE_SHAPE = (3, 32, 32)

# md5 of the files extracted from the official cifar-100-python.tar.gz.
CIFAR100_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}


# Written next to the files by distillbench.data.write_fake_cifar100: these are random images.
GENERATED_MARKER = "GENERATED"


def build_cifar100(
    root: str | os.PathLike[str],
    download: bool = False,
    verify_checksums: bool = True,
    train_transform: Transform | None = None,
    test_transform: Transform | None = None,
) -> tuple[InstanceDataset, InstanceDataset]:
    """The CIFAR-100 train and test splits, with RepDistiller's transforms unless given others."""
    folder = Path(root) / BASE_FOLDER
    missing = [name for name in CIFAR100_MD5 if not (folder / name).is_file()]
    if missing and download:
        # One call fetches and extracts the whole archive: train, test and meta.
        CIFAR100(str(root), train=True, download=True)
    elif missing:
        raise DatasetNotFoundError(_not_found_message(folder, missing))
    if verify_checksums:
        for name, expected in CIFAR100_MD5.items():
            _verify_md5(folder / name, expected)

    classes = _read_pickle(folder / "meta", ("fine_label_names",))["fine_label_names"]
    if len(classes) != NUM_CLASSES:
        raise DatasetCorruptError(
            f"{folder / 'meta'} lists {len(classes)} fine labels, expected {NUM_CLASSES}."
        )
    if train_transform is None:
        train_transform = transforms.train_transform()
    if test_transform is None:
        test_transform = transforms.test_transform()
    train = InstanceDataset(*_read_split(folder / "train"), transform=train_transform, classes=classes)
    test = InstanceDataset(*_read_split(folder / "test"), transform=test_transform, classes=classes)
    # Recorded with every run (run.json): a table never places a run on unverified or generated data
    # against a published number.
    provenance = {"checksums_verified": bool(verify_checksums), "generated": (folder / GENERATED_MARKER).exists()}
    train.provenance = test.provenance = provenance
    return train, test


def _not_found_message(folder: Path, missing: list[str]) -> str:
    return (
        f"CIFAR-100 not found: looked in {folder} and did not find {', '.join(missing)}. "
        f"Expected the layout <root>/{BASE_FOLDER}/train, <root>/{BASE_FOLDER}/test and "
        f"<root>/{BASE_FOLDER}/meta, e.g. as extracted from cifar-100-python.tar.gz, with "
        f"root={folder.parent}. Set the root with dataset.root=/path, or, on a machine with "
        "internet, pass dataset.download=true to fetch it."
    )


def file_md5(path: Path, chunk_size: int = 1 << 20) -> str:
    return file_digest(path, "md5", chunk_size)


def _verify_md5(path: Path, expected: str) -> None:
    actual = file_md5(path)
    if actual != expected:
        raise DatasetCorruptError(
            f"{path} has md5 {actual}, expected {expected} (the official CIFAR-100 file). "
            "Re-download or re-extract cifar-100-python.tar.gz, or, if the files were generated on "
            "purpose (e.g. by scripts/make_fake_cifar100.py), pass dataset.verify_checksums=false."
        )


def _read_pickle(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """Unpickle one CIFAR file; the originals were written by Python 2, hence latin1."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise DatasetCorruptError(
            f"{path} cannot be read as a CIFAR-100 pickle ({exc!r}); it may be truncated. "
            "Re-download or re-extract cifar-100-python.tar.gz."
        ) from exc
    absent = [key for key in keys if not isinstance(entry, dict) or key not in entry]
    if absent:
        raise DatasetCorruptError(f"{path} is not a CIFAR-100 pickle: it lacks {', '.join(absent)}.")
    return entry


def _read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images as (N, 32, 32, 3) uint8 and fine labels as int64.

    Each stored row holds the red, green and blue planes one after another.
    """
    entry = _read_pickle(path, ("data", "fine_labels"))
    rows = np.asarray(entry["data"])
    targets = np.asarray(entry["fine_labels"], dtype=np.int64)
    row_size = int(np.prod(IMAGE_SHAPE))
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != row_size or len(targets) != len(rows):
        raise DatasetCorruptError(
            f"{path} holds data of {rows.dtype} {rows.shape} and {len(targets)} labels, "
            f"expected uint8 (N, {row_size}) and N labels."
        )
    if len(targets) and (targets.min() < 0 or targets.max() >= NUM_CLASSES):
        raise DatasetCorruptError(f"{path} has fine labels outside [0, {NUM_CLASSES}).")
    images = rows.reshape(-1, *IMAGE_SHAPE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), targets
