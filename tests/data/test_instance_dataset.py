"""InstanceDataset serves (image, label, index) from an in-memory array."""

import numpy as np
import pytest
import torch
from PIL import Image

from distillbench.data import InstanceDataset


def _data(n: int = 6) -> np.ndarray:
    return np.arange(n * 4 * 4 * 3, dtype=np.int64).reshape(n, 4, 4, 3).astype(np.uint8)


def test_items_are_image_label_index() -> None:
    data = _data()
    ds = InstanceDataset(data, [0, 1, 2, 0, 1, 2])
    assert len(ds) == 6
    for i in range(len(ds)):
        image, label, index = ds[i]
        assert isinstance(image, Image.Image)
        assert np.array_equal(np.asarray(image), data[i])
        assert label == [0, 1, 2, 0, 1, 2][i]
        assert index == i


def test_transform_is_applied() -> None:
    ds = InstanceDataset(_data(), [0] * 6, transform=lambda img: np.asarray(img).sum())
    assert ds[2][0] == int(_data()[2].astype(np.int64).sum())


def test_targets_and_labels_tensor() -> None:
    ds = InstanceDataset(_data(), [3, 1, 4, 1, 5, 9])
    assert ds.targets.dtype == np.int64
    labels = ds.labels_tensor()
    assert labels.dtype == torch.long
    assert labels.tolist() == [3, 1, 4, 1, 5, 9]
    labels[0] = 7  # a copy: changing it leaves the dataset alone
    assert ds.targets[0] == 3


def test_num_classes_from_classes_or_targets() -> None:
    assert InstanceDataset(_data(), [0, 1, 2, 0, 1, 2]).num_classes == 3
    named = InstanceDataset(_data(), [0, 1, 2, 0, 1, 2], classes=["a", "b", "c", "d"])
    assert named.num_classes == 4
    assert named.classes == ["a", "b", "c", "d"]
    assert InstanceDataset(_data(), [0] * 6).classes is None


@pytest.mark.parametrize(
    "data, targets",
    [
        (_data().astype(np.float32), [0] * 6),
        (_data()[..., :1], [0] * 6),
        (_data(), [0] * 5),
        (_data(), [0, 1, 2, 0, 1, -1]),
    ],
)
def test_rejects_malformed_input(data: np.ndarray, targets: list[int]) -> None:
    with pytest.raises(ValueError):
        InstanceDataset(data, targets)


def test_rejects_labels_beyond_classes() -> None:
    with pytest.raises(ValueError):
        InstanceDataset(_data(), [0, 1, 2, 0, 1, 2], classes=["a", "b"])
