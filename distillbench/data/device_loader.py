"""A training and test loader that keeps the whole dataset on the device and augments there.

The reference path (``loaders.make_loaders``) decodes, crops, flips and normalises one PIL
image at a time on the CPU; for 32x32 images that, not the network, bounds an epoch. This
loader holds the uint8 images on the device once and builds each batch with a few tensor
operations, with no host synchronisation inside an epoch.

What it reproduces of the reference path:

* the order: epoch ``e`` serves the samples in ``EpochShuffleSampler``'s permutation for
  ``(seed, e)``, in batches of ``batch_size``, the last partial batch kept unless ``drop_last``;
* the pixels: for given crop offsets and flip, each sample is bit-exact the dataset's
  torchvision pipeline (zero-padded ``RandomCrop``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize``) applied to the PIL image: the crop and flip only move uint8 pixels, and the
  float32 operations are ToTensor's and Normalize's, one for one.

The augmentation draws differ from the reference path's (which seeds torch's global RNG per
sample): see ``DeviceLoader.plan`` for the stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import transforms as T

from distillbench.data.instance import InstanceDataset
from distillbench.data.sampling import EpochLoader, EpochShuffleSampler
from distillbench.data.transforms import UInt8ToNormalized
from distillbench.runtime.seeding import epoch_seed

LoaderBatch = tuple[Tensor, Tensor, Tensor, Tensor]  # images, labels, index, view (see distillbench.types.Batch)


@dataclass(frozen=True)
class DeviceAugment:
    """The part of a torchvision pipeline the device loader reproduces.

    ``crop`` is the output (height, width) of a ``RandomCrop`` with zero ``padding``, or None
    when the pipeline does not crop; ``flip_p`` is the horizontal-flip probability.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: tuple[int, int] | None = None
    padding: int = 0
    flip_p: float = 0.0

    @property
    def augments(self) -> bool:
        return self.crop is not None or self.flip_p > 0


def recipe_of(transform: object) -> DeviceAugment:
    """Read a ``Compose([RandomCrop?, RandomHorizontalFlip?, ToTensor, Normalize])``.

    Anything else raises ``ValueError``: a step the loader silently skipped would make the
    fast path train on different data than the reference path.
    """
    if not isinstance(transform, T.Compose):
        raise ValueError(f"The device loader needs a torchvision Compose transform, got {type(transform).__name__}.")
    steps = list(transform.transforms)
    crop = steps.pop(0) if steps and type(steps[0]) is T.RandomCrop else None
    flip = steps.pop(0) if steps and type(steps[0]) is T.RandomHorizontalFlip else None
    if [type(step) for step in steps] != [T.ToTensor, T.Normalize]:
        raise ValueError(
            "The device loader reproduces only RandomCrop -> RandomHorizontalFlip -> ToTensor -> Normalize "
            f"(crop and flip optional); got {transform}. Use the DataLoader path for this transform."
        )
    if crop is not None and (crop.pad_if_needed or crop.padding_mode != "constant" or crop.fill != 0):
        raise ValueError(f"The device loader supports only zero padding of fixed size in RandomCrop, got {crop}.")
    normalize = steps[1]
    return DeviceAugment(
        mean=tuple(float(m) for m in normalize.mean),
        std=tuple(float(s) for s in normalize.std),
        crop=None if crop is None else (int(crop.size[0]), int(crop.size[1])),
        padding=0 if crop is None else _uniform_padding(crop.padding),
        flip_p=0.0 if flip is None else float(flip.p),
    )


def _uniform_padding(padding: int | Sequence[int] | None) -> int:
    if padding is None:
        return 0
    if isinstance(padding, int):
        return padding
    if len(set(padding)) == 1:
        return int(padding[0])
    raise ValueError(f"The device loader supports only the same padding on every side, got {padding}.")


@dataclass(frozen=True)
class EpochPlan:
    """Per position of an epoch: the sample served there and its augmentation, on the device.

    ``top``/``left`` are the crop's offsets in the zero-padded image, both None without a crop;
    ``flip`` says whether the crop is mirrored, None without flips.
    """

    index: Tensor
    top: Tensor | None = None
    left: Tensor | None = None
    flip: Tensor | None = None

    @classmethod
    def of_views(cls, index: Tensor, views: Tensor, spans: tuple[int, int]) -> EpochPlan:
        """The plan that serves sample ``index[k]`` in view ``views[k]`` (see ``DeviceLoader.view_of``)."""
        flip = views % 2 == 1
        offset = views // 2
        return cls(index, offset // (spans[1] + 1), offset % (spans[1] + 1), flip)

    def __getitem__(self, part: slice) -> EpochPlan:
        return EpochPlan(self.index[part], *(None if t is None else t[part] for t in (self.top, self.left, self.flip)))


class DeviceLoader(EpochLoader):
    """Serves ``(images, labels, index, view)`` batches of ``dataset`` built on ``device``.

    Images are float32 NCHW (channels_last strides if asked), labels and indices int64, all on
    ``device``. Like the reference training loader it is told the epoch, and how many samples
    of it were already consumed when a run resumes mid-epoch, by ``set_epoch(epoch, skip)``.
    """

    def __init__(
        self,
        dataset: InstanceDataset,
        batch_size: int,
        device: torch.device | str,
        recipe: DeviceAugment,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(dataset, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
                         world_size=world_size)
        self.device = torch.device(device)
        self.recipe = recipe
        self.channels_last = channels_last
        # torch.tensor copies, so read-only arrays (the digits cache) are fine.
        self.images = torch.tensor(dataset.data, device=self.device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.tensor(dataset.targets, dtype=torch.int64, device=self.device)
        self.positions = torch.arange(len(dataset), device=self.device)
        height, width = self.images.shape[2:]
        self.crop_size = recipe.crop or (height, width)
        self.spans = (height + 2 * recipe.padding - self.crop_size[0], width + 2 * recipe.padding - self.crop_size[1])
        if min(self.spans) < 0:
            raise ValueError(f"A {self.crop_size} crop does not fit {height}x{width} images padded by "
                             f"{recipe.padding}.")
        self.normalize = UInt8ToNormalized(recipe.mean, recipe.std, self.device)

    @property
    def num_views(self) -> int:
        """How many distinct crop-and-flip views each image has: 9 x 9 x 2 = 162 for CIFAR's recipe."""
        return (self.spans[0] + 1) * (self.spans[1] + 1) * 2

    def view_of(self, plan: EpochPlan) -> Tensor:
        """Each planned sample's view number, ``(top * (span_w + 1) + left) * 2 + flip``."""
        zeros = torch.zeros_like(plan.index)
        top = zeros if plan.top is None else plan.top
        left = zeros if plan.left is None else plan.left
        flip = zeros if plan.flip is None else plan.flip.long()
        return (top * (self.spans[1] + 1) + left) * 2 + flip

    def plan(self) -> EpochPlan:
        """The whole current epoch, independent of ``skip``.

        The order is ``EpochShuffleSampler``'s for ``(seed, epoch)`` (0..N-1 unshuffled). The
        augmentation comes from one ``torch.Generator`` on the loader's device seeded with
        ``epoch_seed(seed, epoch)``, drawn for all N positions at once, in this order: ``top``
        = ``randint(0, span_h + 1, (N,))`` and ``left`` = ``randint(0, span_w + 1, (N,))`` with
        a crop (span: padded size minus crop size), then ``flip`` = ``rand(N) < p`` with flips.
        So position k's draws do not depend on how many samples are skipped. CPU and CUDA
        generators differ: the draws depend on the device type, the order does not.
        """
        n = len(self.dataset)
        if self.shuffle:
            sampler = EpochShuffleSampler(n, self.seed)
            sampler.set_epoch(self.epoch)
            index = sampler.permutation().to(self.device, non_blocking=True)
        else:
            index = self.positions
        generator = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, self.epoch))
        top = left = flip = None
        if self.recipe.crop is not None:
            top = torch.randint(0, self.spans[0] + 1, (n,), generator=generator, device=self.device)
            left = torch.randint(0, self.spans[1] + 1, (n,), generator=generator, device=self.device)
        if self.recipe.flip_p > 0:
            flip = torch.rand(n, generator=generator, device=self.device) < self.recipe.flip_p
        return EpochPlan(index, top, left, flip)

    def __iter__(self) -> Iterator[LoaderBatch]:
        """Global batches of ``batch_size * world_size``; this rank serves its contiguous share of each."""
        plan, step, n = self.plan(), self.global_batch_size, len(self.dataset)
        for start in range(self.skip, self.skip + len(self) * step, step):
            size = min(step, n - start)
            yield self.make_batch(plan[start + self.rank * size // self.world_size:
                                       start + (self.rank + 1) * size // self.world_size])

    def make_batch(self, plan: EpochPlan) -> LoaderBatch:
        """Gather, zero-pad, crop, flip, then ToTensor's and Normalize's float32 operations."""
        pixels = self.images[plan.index]
        if plan.top is not None and plan.left is not None:
            pad, (height, width) = self.recipe.padding, self.crop_size
            # windows[b, c, i, j] is the crop of padded sample b at offset (i, j): a view, no copy.
            windows = F.pad(pixels, (pad, pad, pad, pad)).unfold(2, height, 1).unfold(3, width, 1)
            pixels = windows[torch.arange(len(plan.index), device=self.device), :, plan.top, plan.left]
        if plan.flip is not None:
            pixels = torch.where(plan.flip.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        images = self.normalize(pixels)
        return images, self.labels[plan.index], plan.index, self.view_of(plan)


def make_device_loaders(
    train: InstanceDataset,
    test: InstanceDataset,
    batch_size: int,
    test_batch_size: int,
    device: torch.device | str,
    seed: int = 0,
    channels_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> tuple[DeviceLoader, DeviceLoader]:
    """Device-resident counterparts of ``make_loaders``' training and test loaders (``drop_last``: the
    training loader leaves each epoch's last partial batch out).

    Each loader follows its own dataset's transform (mean and std included), so any dataset
    built with the recipe's transforms works. The test transform must not be random.
    """
    test_recipe = recipe_of(test.transform)
    if test_recipe.augments:
        raise ValueError(f"The test transform must be deterministic, got {test.transform}.")
    shards = {"channels_last": channels_last, "rank": rank, "world_size": world_size}
    train_loader = DeviceLoader(train, batch_size, device, recipe_of(train.transform), shuffle=True, seed=seed,
                                drop_last=drop_last, **shards)
    test_loader = DeviceLoader(test, test_batch_size, device, test_recipe, shuffle=False, seed=seed, **shards)
    return train_loader, test_loader
