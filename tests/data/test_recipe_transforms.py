"""The CIFAR-100 transforms are RepDistiller's, step for step."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as tv

from distillbench.data import transforms as recipe


def test_cifar100_constants_are_repdistillers() -> None:
    assert recipe.CIFAR100_MEAN == (0.5071, 0.4867, 0.4408)
    assert recipe.CIFAR100_STD == (0.2675, 0.2565, 0.2761)


def test_train_pipeline_order_and_parameters() -> None:
    steps = recipe.train_transform().transforms
    assert [type(s) for s in steps] == [tv.RandomCrop, tv.RandomHorizontalFlip, tv.ToTensor, tv.Normalize]
    crop, flip, _, normalize = steps
    assert crop.size == (32, 32)
    assert crop.padding == 4
    assert crop.fill == 0 and crop.padding_mode == "constant"
    assert flip.p == 0.5
    assert tuple(normalize.mean) == recipe.CIFAR100_MEAN
    assert tuple(normalize.std) == recipe.CIFAR100_STD


def test_train_pipeline_without_flip() -> None:
    steps = recipe.train_transform(hflip=False).transforms
    assert [type(s) for s in steps] == [tv.RandomCrop, tv.ToTensor, tv.Normalize]


def test_test_pipeline_only_normalises() -> None:
    steps = recipe.test_transform().transforms
    assert [type(s) for s in steps] == [tv.ToTensor, tv.Normalize]
    assert tuple(steps[1].mean) == recipe.CIFAR100_MEAN
    assert tuple(steps[1].std) == recipe.CIFAR100_STD


def test_test_transform_output_values() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    out = recipe.test_transform()(Image.fromarray(pixels))
    mean = torch.tensor(recipe.CIFAR100_MEAN).view(3, 1, 1)
    std = torch.tensor(recipe.CIFAR100_STD).view(3, 1, 1)
    expected = (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - mean) / std
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out, expected, atol=1e-6)


def test_random_crop_pads_with_zeros() -> None:
    torch.manual_seed(0)
    white = Image.fromarray(np.full((32, 32, 3), 255, dtype=np.uint8))
    crop = recipe.train_transform(mean=(0, 0, 0), std=(1, 1, 1), hflip=False)
    # Some crop among many must show padding, which is black (0) rather than a reflection.
    assert any((crop(white) == 0).any() for _ in range(50))


@pytest.mark.parametrize("hflip", [True, False])
def test_train_transform_output_shape(hflip: bool) -> None:
    image = Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))
    assert recipe.train_transform(hflip=hflip)(image).shape == (3, 32, 32)
