"""The offline quickstart dataset: scikit-learn's handwritten digits as 32x32 RGB images.

``sklearn.datasets.load_digits`` ships inside scikit-learn, so the quickstart trains with no
download at all, on images shaped like CIFAR's so that the CIFAR architectures apply as-is.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from distillbench.data import transforms
from distillbench.data.instance import InstanceDataset, Transform

NUM_CLASSES = 10
CLASSES = tuple(str(d) for d in range(NUM_CLASSES))
IMAGE_SIZE = 32
TEST_FRACTION = 0.2
_MAX_PIXEL = 16  # load_digits stores grey levels 0..16


def build_digits(
    train_transform: Transform | None = None,
    test_transform: Transform | None = None,
    seed: int = 0,
) -> tuple[InstanceDataset, InstanceDataset]:
    """A stratified 80/20 train/test split of the 1797 digits, fixed by ``seed``.

    The default training transform is a zero-padded random crop with no horizontal flip:
    digits are not mirror-symmetric, and a mirrored 2, 3 or 7 is no longer that digit.
    Both splits are normalised with the training split's own mean and std.
    """
    (train_x, train_y), (test_x, test_y) = _split(seed)
    mean, std = channel_mean_std(train_x)
    if train_transform is None:
        train_transform = transforms.train_transform(mean, std, size=IMAGE_SIZE, padding=4, hflip=False)
    if test_transform is None:
        test_transform = transforms.test_transform(mean, std)
    train = InstanceDataset(train_x, train_y, transform=train_transform, classes=CLASSES)
    test = InstanceDataset(test_x, test_y, transform=test_transform, classes=CLASSES)
    return train, test


def digits_mean_std(seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std, on the 0..1 scale, of the training split for ``seed``."""
    return channel_mean_std(_split(seed)[0][0])


def channel_mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (N, H, W, C) uint8 images, on ToTensor's 0..1 scale."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return tuple(pixels.mean(axis=0).tolist()), tuple(pixels.std(axis=0).tolist())


@cache
def _images() -> tuple[np.ndarray, np.ndarray]:
    """All digits as (1797, 32, 32, 3) uint8 images, upsampled bilinearly, and their labels."""
    digits = load_digits()
    grey = torch.from_numpy(digits.images).float().unsqueeze(1) * (255.0 / _MAX_PIXEL)
    grey = F.interpolate(grey, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    grey = grey.round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy()
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb.flags.writeable = False  # shared by every call through the cache
    return rgb, digits.target.astype(np.int64)


def _split(seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    images, labels = _images()
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=seed
    )
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])
