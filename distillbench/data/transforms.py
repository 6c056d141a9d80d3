"""The augmentation recipe of RepDistiller's CIFAR-100 tables."""

from __future__ import annotations

from collections.abc import Sequence

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
