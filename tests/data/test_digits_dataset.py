"""The offline digits: CIFAR-shaped images, a fixed stratified split, no mirrored digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torchvision import transforms as tv

from distillbench.data import build_digits, digits_mean_std


@pytest.fixture(scope="module")
def digits() -> tuple:
    return build_digits()


def test_sizes_and_shapes(digits: tuple) -> None:
    train, test = digits
    assert len(train) + len(test) == 1797
    assert len(test) == 360  # ceil(0.2 * 1797)
    for ds in (train, test):
        assert ds.data.shape == (len(ds), 32, 32, 3)
        assert ds.data.dtype == np.uint8
        assert ds.num_classes == 10
        assert ds.classes == [str(d) for d in range(10)]


def test_value_range_and_grey_channels(digits: tuple) -> None:
    train, _ = digits
    assert train.data.min() == 0 and train.data.max() == 255
    assert np.array_equal(train.data[..., 0], train.data[..., 1])
    assert np.array_equal(train.data[..., 0], train.data[..., 2])


def test_images_are_bilinear_upsampled_originals(digits: tuple) -> None:
    source = load_digits()
    # PIL's bilinear resize is an independent reference for the 8 -> 32 upsampling.
    reference = np.stack(
        [
            np.asarray(
                Image.fromarray((image * 255 / 16).astype(np.float32)).resize((32, 32), Image.BILINEAR)
            )
            for image in source.images
        ]
    ).reshape(len(source.images), -1)
    _, test = digits
    flat = test.data[..., 0].reshape(len(test), -1).astype(np.float32)
    for image, label in zip(flat[::6], test.targets[::6], strict=True):
        distances = np.abs(reference - image).max(axis=1)
        assert distances.min() <= 0.5 + 1e-4  # equal up to rounding to uint8
        assert source.target[distances.argmin()] == label


def test_split_is_stratified(digits: tuple) -> None:
    train, test = digits
    train_counts = np.bincount(train.targets, minlength=10)
    test_counts = np.bincount(test.targets, minlength=10)
    total = np.bincount(load_digits().target, minlength=10)
    assert np.array_equal(train_counts + test_counts, total)
    assert np.all(np.abs(test_counts - 0.2 * total) <= 1)


def test_split_is_deterministic_and_seeded(digits: tuple) -> None:
    train, test = digits
    again_train, again_test = build_digits()
    assert np.array_equal(train.data, again_train.data) and np.array_equal(test.targets, again_test.targets)
    other_train, _ = build_digits(seed=1)
    assert not np.array_equal(train.data, other_train.data)


def test_no_image_in_both_splits(digits: tuple) -> None:
    train, test = digits
    train_rows = {row.tobytes() for row in train.data}
    duplicates_in_source = 1797 - len({img.tobytes() for img in load_digits().images})
    assert sum(row.tobytes() in train_rows for row in test.data) <= duplicates_in_source


def test_train_transform_has_no_flip(digits: tuple) -> None:
    train, test = digits
    steps = train.transform.transforms
    assert [type(s) for s in steps] == [tv.RandomCrop, tv.ToTensor, tv.Normalize]
    assert steps[0].size == (32, 32) and steps[0].padding == 4
    assert [type(s) for s in test.transform.transforms] == [tv.ToTensor, tv.Normalize]


def test_normalisation_uses_training_statistics(digits: tuple) -> None:
    train, test = digits
    mean, std = digits_mean_std()
    pixels = train.data.reshape(-1, 3) / 255.0
    assert np.allclose(mean, pixels.mean(axis=0)) and np.allclose(std, pixels.std(axis=0))
    assert tuple(train.transform.transforms[-1].mean) == mean
    assert tuple(test.transform.transforms[-1].std) == std
    batch = torch.stack([test[i][0] for i in range(len(test))])
    assert batch.shape == (len(test), 3, 32, 32)
    assert abs(batch.mean().item()) < 0.1 and abs(batch.std().item() - 1) < 0.1


def test_items_carry_their_index(digits: tuple) -> None:
    train, _ = digits
    _, label, index = train[11]
    assert index == 11 and label == train.targets[11]
