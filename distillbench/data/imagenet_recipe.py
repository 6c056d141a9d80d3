"""The ImageNet recipe's augmentation as the reference path draws it, for loaders that apply it elsewhere.

``recipe_of`` reads a torchvision pipeline into the parameters a device-side loader needs (refusing
anything it would not reproduce); ``train_crop`` draws a sample's RandomResizedCrop box and flip
exactly as ``get_params`` and ``RandomHorizontalFlip`` draw them under ``EpochSeededDataset``'s
per-sample seed, so the two paths cut the same box out of the same image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from distillbench.runtime.seeding import epoch_seed


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed ``EpochSeededDataset`` gives torch's RNG before sample ``index``'s transform."""
    return epoch_seed(seed, epoch) ^ (index * 2_654_435_761 % 2**61)


@dataclass(frozen=True)
class ImageNetAugment:
    """The part of a torchvision ImageNet pipeline this loader reproduces.

    Training: ``RandomResizedCrop(size, scale, ratio)`` (``scale`` and ``ratio`` set), then a
    horizontal flip with probability ``flip_p``. Test: ``Resize(resize, max_size)`` then
    ``CenterCrop(size)`` (``resize`` set). Both end in ToTensor and Normalize(mean, std).
    """

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] | None = None
    flip_p: float = 0.0
    resize: tuple[int, ...] | None = None
    max_size: int | None = None

    @property
    def random(self) -> bool:
        return self.scale is not None


def recipe_of(transform: object) -> ImageNetAugment:
    """Read ``Compose([RandomResizedCrop, RandomHorizontalFlip?, ToTensor, Normalize])`` or
    ``Compose([Resize, CenterCrop, ToTensor, Normalize])``, bilinear.

    Anything else raises ``ValueError``: a step the loader silently skipped would make the fast
    path train or score on different data than the reference path.
    """
    steps = list(transform.transforms) if isinstance(transform, T.Compose) else []
    kinds = [type(step) for step in steps]
    head, tail = kinds[:-2], kinds[-2:]
    if tail != [T.ToTensor, T.Normalize] or head not in (
        [T.RandomResizedCrop], [T.RandomResizedCrop, T.RandomHorizontalFlip], [T.Resize, T.CenterCrop]
    ):
        raise ValueError(
            "The JPEG device loader reproduces only RandomResizedCrop -> RandomHorizontalFlip? -> ToTensor -> "
            f"Normalize (training) or Resize -> CenterCrop -> ToTensor -> Normalize (test); got {transform}. "
            "Use dataset.loader=torch for this transform."
        )
    if steps[0].interpolation != InterpolationMode.BILINEAR:
        raise ValueError(f"The JPEG device loader resizes bilinearly only, got {steps[0]}.")
    normalize = steps[-1]
    common = {
        "mean": tuple(float(m) for m in normalize.mean),
        "std": tuple(float(s) for s in normalize.std),
    }
    if head[0] is T.RandomResizedCrop:
        crop = steps[0]
        return ImageNetAugment(
            size=(int(crop.size[0]), int(crop.size[1])),
            scale=(float(crop.scale[0]), float(crop.scale[1])),
            ratio=(float(crop.ratio[0]), float(crop.ratio[1])),
            flip_p=float(steps[1].p) if len(head) == 2 else 0.0,
            **common,
        )
    resize, center = steps[0], steps[1]
    size = resize.size
    return ImageNetAugment(
        size=(int(center.size[0]), int(center.size[1])),
        resize=(int(size),) if isinstance(size, int) else tuple(int(s) for s in size),
        max_size=resize.max_size,
        **common,
    )


def random_resized_crop_params(
    height: int, width: int, scale: Sequence[float], ratio: Sequence[float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    """``RandomResizedCrop.get_params``'s (top, left, h, w), drawn from ``generator``.

    The same draws, in the same order and float32 arithmetic, so the result equals
    ``get_params`` run on torch's global RNG in the state ``generator`` is in.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    # As get_params: the central crop of the whole image, clamped to the ratio range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def train_crop(recipe: ImageNetAugment, seed: int, epoch: int, index: int, height: int, width: int) -> tuple[int, ...]:
    """(top, left, h, w, flip) of sample ``index`` in ``epoch``: the reference path's draws for it."""
    assert recipe.scale is not None and recipe.ratio is not None
    generator = torch.Generator().manual_seed(sample_seed(seed, epoch, index))
    box = random_resized_crop_params(height, width, recipe.scale, recipe.ratio, generator)
    flip = recipe.flip_p > 0 and bool(torch.rand(1, generator=generator).item() < recipe.flip_p)
    return (*box, int(flip))
