"""The augmentation recipe of RepDistiller's CIFAR-100 tables."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import transforms

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


def train_transform(
    mean: Sequence[float] = CIFAR100_MEAN,
    std: Sequence[float] = CIFAR100_STD,
    size: int = 32,
    padding: int = 4,
    hflip: bool = True,
) -> transforms.Compose:
    """Zero-padded random crop, optional horizontal flip, then normalisation.

    ``hflip=False`` is for data whose meaning changes when mirrored, such as digits.
    """
    steps: list = [transforms.RandomCrop(size, padding=padding)]
    if hflip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


def test_transform(
    mean: Sequence[float] = CIFAR100_MEAN, std: Sequence[float] = CIFAR100_STD
) -> transforms.Compose:
    """Evaluation sees the image unaugmented, only normalised."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])


# Keeps pytest from collecting this function as a test in modules that import it by name.
test_transform.__test__ = False  # type: ignore[attr-defined]


class UInt8ToNormalized:
    """ToTensor's then Normalize's float32 operations on a uint8 NCHW batch already on a device.

    Bit for bit the torchvision ops: the constants are device tensors, as Normalize builds them,
    and 255 too, since CUDA divides by a host scalar by multiplying with its reciprocal, which
    rounds 126 of the 256 values differently.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str) -> None:
        self.scale = torch.tensor(255.0, dtype=torch.float32).to(device)
        self.mean = torch.tensor(tuple(mean), dtype=torch.float32).view(-1, 1, 1).to(device)
        self.std = torch.tensor(tuple(std), dtype=torch.float32).view(-1, 1, 1).to(device)

    def __call__(self, pixels: Tensor) -> Tensor:
        return pixels.float().div_(self.scale).sub_(self.mean).div_(self.std)
