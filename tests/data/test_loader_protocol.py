"""Every training loader speaks one protocol: ``set_epoch(epoch, skip)``, then batches a ``Batch`` is made from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distillbench.data.device_loader import make_device_loaders
from distillbench.data.instance import InstanceDataset
from distillbench.data.loaders import make_loaders
from distillbench.data.transforms import test_transform, train_transform
from distillbench.types import Batch


def datasets(n: int = 40):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n) % 4
    train = InstanceDataset(images, labels, transform=train_transform(), num_classes=4)
    test = InstanceDataset(images, labels, transform=test_transform(), num_classes=4)
    return train, test


@pytest.mark.parametrize("kind", ["dataloader", "device"])
def test_set_epoch_with_skip_serves_the_rest_of_that_epoch(kind):
    train, test = datasets()
    make = make_loaders if kind == "dataloader" else make_device_loaders
    loader, _ = make(train, test, 8, 40, "cpu", seed=3) if kind == "device" else make(train, test, 8, 40, seed=3)
    batches = []
    for epoch, skip in ((2, 0), (2, 16), (3, 0)):
        loader.set_epoch(epoch, skip)
        batches.append([Batch.from_loader(item, torch.device("cpu")) for item in loader])
    whole, resumed, other = batches
    assert len(whole) == 5 and len(resumed) == 3
    for a, b in zip(whole[2:], resumed, strict=True):  # the same samples, the same crops and flips
        assert torch.equal(a.index, b.index) and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(torch.cat([b.index for b in whole]), torch.cat([b.index for b in other]))
