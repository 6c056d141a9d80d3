"""Random stand-in CIFAR-100 files, for tests and smoke runs on machines without the dataset.

The files have exactly the layout and pickle format of the official ones, so every code path
that reads CIFAR-100 runs unchanged; only their md5 differs, hence
``dataset.verify_checksums=false`` when training on them.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from distillbench.data.cifar100 import BASE_FOLDER, GENERATED_MARKER, IMAGE_SHAPE, NUM_CLASSES

NUM_COARSE_CLASSES = 20


def write_fake_cifar100(
    root: str | os.PathLike[str],
    n_train: int = 500,
    n_test: int = 100,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``<root>/cifar-100-python/{train,test,meta}`` and return that folder.

    Labels go round-robin over the 100 classes before being shuffled, so every class appears
    once a split has at least 100 images. Each image is its class's mean colour plus noise:
    weak enough to be no trivial task, strong enough that a model can learn something.
    ``overwrite=False`` protects a real dataset from being replaced by noise.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    folder = Path(root) / BASE_FOLDER
    existing = [name for name in ("train", "test", "meta") if (folder / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{folder} already holds {', '.join(existing)}; pass overwrite=True to replace them."
        )
    folder.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    class_colours = rng.uniform(64, 192, size=(NUM_CLASSES, 3))
    for name, n, batch_label in (("train", n_train, "training"), ("test", n_test, "testing")):
        fine = rng.permutation(np.arange(n) % NUM_CLASSES)
        _dump(
            folder / name,
            {
                "filenames": [f"fake_{name}_{i:05d}.png" for i in range(n)],
                "batch_label": f"{batch_label} batch 1 of 1",
                "fine_labels": fine.tolist(),
                "coarse_labels": (fine % NUM_COARSE_CLASSES).tolist(),
                "data": _images(rng, class_colours[fine]),
            },
        )
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fake_class_{c:02d}" for c in range(NUM_CLASSES)],
            "coarse_label_names": [f"fake_superclass_{c:02d}" for c in range(NUM_COARSE_CLASSES)],
        },
    )
    # Runs record that they trained on generated images (run.json "data"), so tables keep them apart.
    (folder / GENERATED_MARKER).write_text("Random images from distillbench.data.write_fake_cifar100, not CIFAR-100.\n")
    return folder


def _images(rng: np.random.Generator, colours: np.ndarray) -> np.ndarray:
    """Rows of CHW-planar uint8 pixels: per-image colour jitter plus per-pixel noise."""
    n = len(colours)
    channels = IMAGE_SHAPE[0]
    mean = colours + rng.normal(0, 16, size=(n, channels))
    pixels = mean[:, :, None, None] + rng.normal(0, 48, size=(n, *IMAGE_SHAPE))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(n, -1)


def _dump(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f)
