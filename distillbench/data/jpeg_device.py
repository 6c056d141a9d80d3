"""ImageNet batches decoded and augmented on the training device, from JPEG bytes read by workers.

The reference path (``loaders.make_loaders`` over ``ImageFileDataset``) decodes, crops and resizes
each image with PIL in a worker process; at 8-11k images/s that takes far more CPU cores than a
GPU machine has. Here the workers only read each file's bytes, parse its JPEG header and draw its
crop, and the main process decodes the whole batch with ``torchvision.io.decode_jpeg(list,
device=...)`` (batched nvJPEG on CUDA, libjpeg-turbo on CPU, same code) and crops, resizes and
normalises on that device.

What it reproduces of the reference path:

* the order: the training loader serves ``EpochShuffleSampler``'s permutation for ``(seed,
  epoch)``, the test loader the dataset's order, ``set_epoch(epoch, skip)`` resumes mid-epoch;
* the augmentation draws: each sample's ``RandomResizedCrop`` box and flip come from a generator
  seeded with the seed ``EpochSeededDataset`` gives torch's RNG for that (seed, epoch, sample),
  drawn as ``RandomResizedCrop.get_params`` and ``RandomHorizontalFlip`` draw them, so both paths
  cut the same box out of the same image;
* the pixels, up to a few LSBs: nvJPEG's IDCT differs from libjpeg-turbo's, and the antialiased
  bilinear resize of a tensor is torch's, not PIL's. ``tests/data/test_jpeg_device.py`` pins the
  difference.

Files nvJPEG cannot take (not a JPEG, CMYK/YCCK, 12-bit, arithmetic-coded or lossless: ImageNet
has a PNG and a few CMYK files named ``.JPEG``) are decoded with PIL in the worker instead, as
``default_loader`` decodes them; a file whose batched decode fails is retried alone, then with PIL.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from distillbench.data.imagenet import ImageFileDataset
from distillbench.data.imagenet_recipe import ImageNetAugment, recipe_of, train_crop
from distillbench.data.jpeg_header import pil_decode, read_jpeg_header
from distillbench.data.sampling import EpochLoader, EpochShuffleSampler
from distillbench.data.transforms import UInt8ToNormalized

log = logging.getLogger(__name__)

LoaderBatch = tuple[Tensor, Tensor, Tensor]  # images, labels, index (see distillbench.types.Batch)


class EncodedImage(NamedTuple):
    """One sample as a worker serves it.

    ``data`` is the file's bytes (1-D uint8) when nvJPEG can decode it, else the PIL-decoded
    CHW uint8 pixels; ``size`` is the (height, width) the header or PIL gave; ``crop`` is (top,
    left, h, w, flip) for the training recipe, None for test.
    """

    data: Tensor
    label: int
    index: int
    size: tuple[int, int]
    crop: tuple[int, ...] | None


class EncodedBatch(NamedTuple):
    """A batch of ``EncodedImage`` packed into a few tensors.

    One tensor of all the JPEG bytes back to back (``offsets[k]:offsets[k + 1]`` is sample k's;
    empty for a PIL-decoded sample) crosses from a worker to the main process as one
    shared-memory segment. A list of 512 small tensors costs one file descriptor each: receiving
    it took the main process 690 ms against 1.5 ms packed (2-core CPU box, 110 kB per file).
    """

    data: Tensor
    offsets: list[int]
    decoded: dict[int, Tensor]
    sizes: list[tuple[int, int]]
    labels: Tensor
    index: Tensor
    crops: Tensor | None


def pack(samples: list[EncodedImage]) -> EncodedBatch:
    """The DataLoader's collate_fn: runs in the worker."""
    streams = [s.data if s.data.dim() == 1 else s.data.new_empty(0) for s in samples]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in streams])]).tolist()
    crops = None if samples[0].crop is None else torch.tensor([s.crop for s in samples], dtype=torch.int64)
    return EncodedBatch(
        data=torch.cat(streams),
        offsets=offsets,
        decoded={k: s.data for k, s in enumerate(samples) if s.data.dim() == 3},
        sizes=[s.size for s in samples],
        labels=torch.tensor([s.label for s in samples], dtype=torch.int64),
        index=torch.tensor([s.index for s in samples], dtype=torch.int64),
        crops=crops,
    )


class JpegBytesDataset(Dataset):
    """Serves each image file's bytes, label, index and (for training) the crop to cut from it.

    Reading and header parsing are all a worker does; the crop needs the image size, which the
    header gives, and drawing it here keeps that per-sample Python off the main process.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], recipe: ImageNetAugment, seed: int = 0) -> None:
        self.samples = samples
        self.recipe = recipe
        self.seed = seed
        self.epoch = 1

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> EncodedImage:
        path, label = self.samples[index]
        with open(path, "rb") as file:
            raw = file.read()
        header = read_jpeg_header(raw)
        if header is not None and header.nvjpeg_ok:
            data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            height, width = header.height, header.width
        else:
            log.debug("%s is not a JPEG nvJPEG decodes; decoding it with PIL", path)
            data = pil_decode(raw)
            height, width = data.shape[1:]
        crop = train_crop(self.recipe, self.seed, self.epoch, index, height, width) if self.recipe.random else None
        return EncodedImage(data, label, index, (height, width), crop)


class JpegDeviceLoader(EpochLoader):
    """Serves ``(images, labels, index)`` batches of an image-folder dataset, built on ``device``.

    Images are float32 NCHW (channels_last strides if asked), labels and indices int64, all on
    ``device``. Like the reference training loader it is told the epoch, and how many samples of
    it were already consumed when a run resumes mid-epoch, by ``set_epoch(epoch, skip)``.
    """

    def __init__(
        self,
        dataset: ImageFileDataset,
        batch_size: int,
        device: torch.device | str,
        recipe: ImageNetAugment,
        *,
        shuffle: bool,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(dataset, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
                         world_size=world_size)
        self.device = torch.device(device)
        self.recipe = recipe
        self.num_workers = num_workers
        self.channels_last = channels_last
        self.encoded = JpegBytesDataset(dataset.samples, recipe, seed)
        self.normalize = UInt8ToNormalized(recipe.mean, recipe.std, self.device)

    def sampler(self) -> EpochShuffleSampler:
        """The epoch's order (the reference path's), this rank's share of each global batch."""
        sampler = EpochShuffleSampler(len(self.dataset), self.seed, rank=self.rank, world_size=self.world_size,
                                      batch_size=self.batch_size, shuffle=self.shuffle)
        sampler.set_epoch(self.epoch, self.skip)
        return sampler

    def order(self) -> list[int]:
        """The samples of the current epoch in serving order, independent of ``skip`` (one process)."""
        return self.sampler().permutation().tolist()

    def __iter__(self) -> Iterator[LoaderBatch]:
        # Workers are forked per epoch and take the dataset, epoch included, with them.
        self.encoded.epoch = self.epoch
        workers = DataLoader(
            self.encoded, batch_size=self.batch_size, sampler=self.sampler().positions().tolist(),
            num_workers=self.num_workers, collate_fn=pack,
        )
        # len(self) global batches: with drop_last the partial one is left out on every rank alike (a rank's share
        # of it can be a whole per-rank batch while another's is not).
        for batch in itertools.islice(workers, len(self)):
            yield self.make_batch(batch)

    def decode(self, batch: EncodedBatch) -> list[Tensor]:
        """Each sample's CHW uint8 RGB pixels on the device: one batched decode of the JPEGs."""
        images: list[Tensor | None] = [None] * len(batch.index)
        for k, pixels in batch.decoded.items():
            images[k] = pixels.to(self.device, non_blocking=True)
        todo = [k for k, image in enumerate(images) if image is None]
        streams = [batch.data[batch.offsets[k]:batch.offsets[k + 1]] for k in todo]
        if streams:
            try:
                decoded = _decode_jpegs(streams, self.device)
            except RuntimeError:
                indices = batch.index[todo].tolist()
                decoded = [self._decode_alone(s, i) for s, i in zip(streams, indices, strict=True)]
            for k, image in zip(todo, decoded, strict=True):
                images[k] = image
        return images  # type: ignore[return-value]

    def _decode_alone(self, stream: Tensor, index: int) -> Tensor:
        """One file whose batch failed to decode: by itself, else with PIL, as the reference path would."""
        try:
            return _decode_jpegs([stream], self.device)[0]
        except RuntimeError as exc:
            path = self.dataset.samples[index][0]
            log.warning("decode_jpeg failed on %s (%s); decoding it with PIL", path, exc)
            return pil_decode(stream.numpy().tobytes()).to(self.device, non_blocking=True)

    def make_batch(self, batch: EncodedBatch) -> LoaderBatch:
        """Decode, then per sample crop and resize to uint8, then flip and normalise the whole batch."""
        images = self.decode(batch)
        recipe, size = self.recipe, list(self.recipe.size)
        flip = None
        if batch.crops is not None:
            crops = batch.crops.tolist()
            resized = []
            for k, image in enumerate(images):
                height, width = image.shape[1:]
                if (height, width) != batch.sizes[k]:
                    # The header lied about the size: draw for the decoded one, as the reference path does.
                    crops[k] = train_crop(recipe, self.seed, self.epoch, int(batch.index[k]), height, width)
                top, left, h, w, _ = crops[k]
                resized.append(TF.resize(image[:, top:top + h, left:left + w], size, antialias=True))
            pixels = torch.stack(resized)
            if recipe.flip_p > 0:
                flip = torch.tensor([c[4] for c in crops], dtype=torch.bool).to(self.device, non_blocking=True)
        else:
            assert recipe.resize is not None
            pixels = torch.stack([
                TF.center_crop(TF.resize(image, list(recipe.resize), max_size=recipe.max_size, antialias=True), size)
                for image in images
            ])
        if flip is not None:
            pixels = torch.where(flip.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        output = self.normalize(pixels)
        labels = batch.labels.to(self.device, non_blocking=True)
        return output, labels, batch.index.to(self.device, non_blocking=True)


def _decode_jpegs(streams: list[Tensor], device: torch.device) -> list[Tensor]:
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec; 0.26 on the GPU machine does not.
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(streams, mode=ImageReadMode.RGB, device=device)


def make_jpeg_device_loaders(
    train_set: ImageFileDataset,
    test_set: ImageFileDataset,
    batch_size: int,
    test_batch_size: int,
    num_workers: int = 0,
    test_num_workers: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    channels_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> tuple[JpegDeviceLoader, JpegDeviceLoader]:
    """Counterparts of ``make_loaders``' loaders that decode and augment on ``device`` (``drop_last``: the
    training loader leaves each epoch's last partial batch out).

    Each loader follows its dataset's transform (sizes, scale, ratio, mean and std), which must be
    the ImageNet recipe's shape: see ``recipe_of``. The test transform must not be random.
    """
    test_recipe = recipe_of(test_set.transform)
    if test_recipe.random:
        raise ValueError(f"The test transform must be deterministic, got {test_set.transform}.")
    train_loader = JpegDeviceLoader(
        train_set, batch_size, device, recipe_of(train_set.transform), shuffle=True, seed=seed,
        num_workers=num_workers, channels_last=channels_last, rank=rank, world_size=world_size, drop_last=drop_last,
    )
    test_loader = JpegDeviceLoader(
        test_set, test_batch_size, device, test_recipe, shuffle=False, seed=seed,
        num_workers=num_workers if test_num_workers is None else test_num_workers, channels_last=channels_last,
        rank=rank, world_size=world_size,
    )
    return train_loader, test_loader
