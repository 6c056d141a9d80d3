"""A small, fixed part of a split (``dataset.subset``), for debug runs: ``configs/debug/``."""

from __future__ import annotations

import copy

import numpy as np

from distillbench.errors import ConfigError


def spread_indices(size: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over ``range(size)`` (every size/count-th sample), so a split stored class
    by class (ImageFolder) still gives a subset with many classes. Always the same ones."""
    return np.arange(count, dtype=np.int64) * size // count


def take_subset(dataset, count: int | None, key: str):
    """``dataset`` reduced to ``count`` samples (None, or at least its size: unchanged).

    The result is a dataset of the same type whose indices run from 0 (per-sample memories such as CRD's are
    sized to it) and which keeps ``data``/``samples``, ``targets``, ``transform`` and the provenance, so every
    loader and distiller treats it as the full set."""
    if count is None:
        return dataset
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"{key}={count!r} is not valid: it must be a whole number >= 1, or null for the whole split.")
    if count >= len(dataset):
        return dataset
    indices = spread_indices(len(dataset), count)
    part = copy.copy(dataset)
    if hasattr(dataset, "data"):  # in-memory sets (InstanceDataset)
        part.data = dataset.data[indices]
    elif hasattr(dataset, "samples"):  # image files (ImageFileDataset)
        part.samples = [dataset.samples[i] for i in indices]
    else:
        raise ConfigError(f"{key} cannot reduce a {type(dataset).__name__}; remove dataset.subset.")
    part.targets = np.asarray(dataset.targets)[indices]
    return part


def apply_subset(train_set, test_set, subset, augment: bool = True) -> tuple:
    """``dataset.subset`` ({train: N, test: M}, either null) and ``dataset.augment`` (false: the training images
    go through the test transform)."""
    if subset is not None:
        train_set = take_subset(train_set, subset.get("train"), "dataset.subset.train")
        test_set = take_subset(test_set, subset.get("test"), "dataset.subset.test")
    if not augment:
        train_set = copy.copy(train_set)
        train_set.transform = test_set.transform
    return train_set, test_set
