"""The JPEG device loader serves the PIL path's batches: same order, same crops, pixels within a few LSBs."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as T

from distillbench.data import jpeg_device
from distillbench.data.imagenet import ImageFileDataset, build_imagenet
from distillbench.data.imagenet_recipe import random_resized_crop_params, recipe_of, sample_seed, train_crop
from distillbench.data.jpeg_device import JpegDeviceLoader, make_jpeg_device_loaders
from distillbench.data.jpeg_header import read_jpeg_header
from distillbench.data.loaders import make_loaders
from distillbench.data.sampling import EpochSeededDataset, start_epoch

WNIDS = ("n01440764", "n01443537", "n01484850")
# (width, height) of the ordinary JPEGs, shared out over the classes: up- and downscaling, both orientations.
SIZES = ((320, 240), (240, 320), (500, 375), (180, 200), (64, 48), (375, 500), (300, 300), (256, 171))

# |jpeg_device - PIL path| in normalised units (1 uint8 LSB is 1/255/0.224 = 0.0175 of them), measured on
# CPU over these images, seeds 0/3/11 and epochs 1-3: the mean per image is at most 0.0031 (training crops;
# 0.0001 for the test transform) and the largest pixel differs by 2 LSBs (0.035). libjpeg-turbo decodes
# alike in both paths; the difference is torch's uint8 antialiased bilinear resize rounding unlike PIL's.
# Resizing in float32 and rounding, as on CUDA, measures 0.0035 and 1 LSB. nvJPEG's IDCT adds a few LSBs
# on CUDA: not measured here.
MEAN_TOL = 0.01
MAX_TOL = 2.5 / 255 / 0.224


def natural_image(rng: np.random.Generator, width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Smooth colour fields plus grain: JPEG-compressible like a photograph, unlike white noise."""
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float64)
    pixels = np.clip(smooth + rng.normal(0, 6, size=smooth.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def write_tree(root: Path) -> None:
    """ImageFolder ImageNet with the oddities of the real one: grayscale, CMYK and PNG files named .JPEG."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 2)):
        sizes = iter(SIZES * 2)
        for wnid in WNIDS:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                natural_image(rng, *next(sizes)).save(folder / f"{wnid}_{i}.JPEG", quality=85)
        first, second = root / split / WNIDS[0], root / split / WNIDS[1]
        natural_image(rng, 200, 150, "L").save(first / "gray.JPEG", quality=85)
        natural_image(rng, 150, 210).save(first / "png.JPEG", format="PNG")
        natural_image(rng, 260, 190, "CMYK").save(second / "cmyk.JPEG", quality=90)
        natural_image(rng, 230, 300).save(second / "progressive.JPEG", quality=85, progressive=True, subsampling=0)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageFileDataset, ImageFileDataset]:
    root = tmp_path_factory.mktemp("imagenet")
    write_tree(root)
    return build_imagenet(root)


def loaders(sets, batch_size: int = 5, seed: int = 3, num_workers: int = 0):
    train, val = sets
    return make_jpeg_device_loaders(train, val, batch_size, 4, num_workers, 0, "cpu", seed=seed)


def run(loader, epoch: int, skip: int = 0) -> list[tuple[Tensor, Tensor, Tensor]]:
    start_epoch(loader, epoch, skip)
    return list(loader)


def cat(batches: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    images, labels, index = zip(*batches, strict=True)
    return torch.cat(images), torch.cat(labels), torch.cat(index)


def assert_close_to_pil(ours: list, theirs: list) -> None:
    assert len(ours) == len(theirs)
    for (images, labels, index), (ref_images, ref_labels, ref_index) in zip(ours, theirs, strict=True):
        assert torch.equal(index, ref_index) and torch.equal(labels, ref_labels)
        assert images.shape == ref_images.shape and images.dtype == torch.float32
        diff = (images - ref_images).abs()
        assert diff.mean(dim=(1, 2, 3)).max() < MEAN_TOL, diff.mean(dim=(1, 2, 3))
        assert diff.max() < MAX_TOL, diff.max()


def test_headers_route_what_nvjpeg_cannot_decode(sets) -> None:
    train, _ = sets
    headers = {Path(path).stem: read_jpeg_header(Path(path).read_bytes()) for path, _ in train.samples}
    assert headers["png"] is None
    assert headers["cmyk"].components == 4 and not headers["cmyk"].nvjpeg_ok
    assert headers["gray"].components == 1 and headers["gray"].nvjpeg_ok
    assert headers["progressive"].frame == 0xC2 and headers["progressive"].nvjpeg_ok
    assert (headers["progressive"].width, headers["progressive"].height) == (230, 300)
    assert headers[f"{WNIDS[0]}_0"].nvjpeg_ok and (headers[f"{WNIDS[0]}_0"].width, headers[f"{WNIDS[0]}_0"].height) \
        == SIZES[0]


def test_batches_match_the_pil_path(sets) -> None:
    train, val = sets
    jpeg_train, jpeg_test = loaders(sets)
    pil_train, pil_test = make_loaders(train, val, 5, 4, seed=3)
    assert (len(jpeg_train), len(jpeg_test)) == (len(pil_train), len(pil_test)) == (4, 3)
    assert jpeg_train.batch_size == 5 and jpeg_train.dataset is train
    assert jpeg_train.dataset.targets is train.targets
    ours = run(jpeg_train, 2)
    assert [len(batch[2]) for batch in ours] == [5, 5, 5, 1]
    assert sorted(cat(ours)[2].tolist()) == list(range(len(train)))
    assert_close_to_pil(ours, run(pil_train, 2))
    test = list(jpeg_test)
    assert cat(test)[2].tolist() == list(range(len(val)))
    assert torch.equal(cat(test)[1], torch.from_numpy(val.targets))
    assert_close_to_pil(test, list(pil_test))


def test_crop_params_are_get_params_under_the_same_seed() -> None:
    crop = T.RandomResizedCrop(224)
    recipe = recipe_of(T.Compose([crop, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize((0.5,), (0.5,))]))
    # Includes extreme shapes, where all ten tries can fail and get_params falls back to a central crop.
    for height, width in ((375, 500), (500, 375), (48, 64), (1, 1), (2000, 30), (30, 2000), (7, 3)):
        for index in range(25):
            seed = sample_seed(3, 2, index)
            torch.manual_seed(seed)
            box = crop.get_params(torch.empty(3, height, width), crop.scale, crop.ratio)
            expected = (*box, int(torch.rand(1) < 0.5))
            assert train_crop(recipe, 3, 2, index, height, width) == expected
            generator = torch.Generator().manual_seed(seed)
            assert random_resized_crop_params(height, width, crop.scale, crop.ratio, generator) == expected[:4]


def test_sample_seed_is_epoch_seeded_datasets() -> None:
    class Seeds(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 100

        def __getitem__(self, index: int) -> int:
            return torch.initial_seed()

    seeded = EpochSeededDataset(Seeds(), seed=7)
    seeded.set_epoch(4)
    assert [seeded[i] for i in (0, 1, 99)] == [sample_seed(7, 4, i) for i in (0, 1, 99)]


def test_epochs_repeat_and_differ(sets) -> None:
    jpeg_train, _ = loaders(sets)
    first = cat(run(jpeg_train, 1))
    again = cat(run(jpeg_train, 1))
    other = cat(run(jpeg_train, 2))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[2], other[2])
    # The same image in another epoch gets another crop.
    order = other[2].argsort()
    assert not torch.equal(first[0][first[2].argsort()], other[0][order])


def test_skip_serves_the_tail_of_the_epoch(sets) -> None:
    jpeg_train, jpeg_test = loaders(sets)
    full = cat(run(jpeg_train, 3))
    tail = run(jpeg_train, 3, skip=7)
    assert len(jpeg_train) == len(tail) == math.ceil((len(full[2]) - 7) / 5)
    assert all(torch.equal(a, b[7:]) for a, b in zip(cat(tail), full, strict=True))
    assert len(run(jpeg_train, 3, skip=len(full[2]))) == 0
    with pytest.raises(ValueError, match="skip"):
        jpeg_train.set_epoch(1, skip=len(full[2]) + 1)
    test_tail = cat(run(jpeg_test, 1, skip=5))
    assert test_tail[2].tolist() == list(range(5, len(sets[1])))


def test_workers_serve_bytes_and_a_size_mismatch_redraws_the_crop(sets) -> None:
    train, _ = sets
    jpeg_train, _ = loaders(sets)
    jpeg_train.set_epoch(2)
    jpeg_train.encoded.epoch = 2
    samples = [jpeg_train.encoded[i] for i in range(len(train))]
    kinds = {Path(path).stem: sample.data.dim() for (path, _), sample in zip(train.samples, samples, strict=True)}
    assert kinds["png"] == kinds["cmyk"] == 3 and kinds["gray"] == kinds["progressive"] == 1
    assert all(s.data.dtype == torch.uint8 and s.index == i for i, s in enumerate(samples))
    expected = jpeg_train.make_batch(jpeg_device.pack(samples))
    # A header that gave the wrong size: the crop is drawn again for the decoded image, as PIL would.
    lying = [s._replace(size=(s.size[0] + 40, s.size[1] // 2), crop=(0, 0, 1, 1, 0)) for s in samples]
    redrawn = jpeg_train.make_batch(jpeg_device.pack(lying))
    assert all(torch.equal(a, b) for a, b in zip(redrawn, expected, strict=True))


def test_workers_serve_what_the_main_process_does(sets) -> None:
    alone = cat(run(loaders(sets)[0], 2))
    forked = cat(run(loaders(sets, num_workers=2)[0], 2))
    assert all(torch.equal(a, b) for a, b in zip(alone, forked, strict=True))


def test_failed_decode_falls_back_to_pil(sets, monkeypatch, caplog) -> None:
    _, val = sets
    expected = list(loaders(sets)[1])

    def broken(streams, device):
        raise RuntimeError("Error while decoding JPEG images")

    monkeypatch.setattr(jpeg_device, "_decode_jpegs", broken)
    with caplog.at_level(logging.WARNING, logger=jpeg_device.__name__):
        fallen_back = list(loaders(sets)[1])
    # PIL decodes like libjpeg-turbo, so only the resize differs from the nvJPEG-less path: not at all here.
    assert all(torch.equal(a, b) for a, b in zip(cat(fallen_back), cat(expected), strict=True))
    # Every JPEG that nvJPEG was to decode went through PIL, and said so.
    assert len(caplog.records) == len(val) - 2


def test_channels_last(sets) -> None:
    train, val = sets
    _, test = make_jpeg_device_loaders(train, val, 5, 4, device="cpu", channels_last=True)
    images = next(iter(test))[0]
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_only_the_imagenet_recipe_is_accepted(sets) -> None:
    train, val = sets
    normalize = T.Normalize((0.5,), (0.5,))
    for transform in (
        None,
        T.Compose([T.RandomResizedCrop(224), T.ColorJitter(0.4), T.ToTensor(), normalize]),
        T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                   normalize]),
        T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()]),
    ):
        with pytest.raises(ValueError):
            recipe_of(transform)
    recipe = recipe_of(T.Compose([T.Resize(128), T.CenterCrop(112), T.ToTensor(), normalize]))
    assert (recipe.resize, recipe.size, recipe.random) == ((128,), (112, 112), False)
    random_test = ImageFileDataset(val.samples, val.classes, transform=train.transform)
    with pytest.raises(ValueError, match="deterministic"):
        make_jpeg_device_loaders(train, random_test, 5, 4)
    assert isinstance(loaders(sets)[0], JpegDeviceLoader)


def test_two_ranks_share_each_global_batch_of_one_process(sets) -> None:
    train, test = sets
    whole = make_jpeg_device_loaders(train, test, 6, 6, seed=3)[0]
    ranks = [make_jpeg_device_loaders(train, test, 3, 3, seed=3, rank=r, world_size=2)[0] for r in (0, 1)]
    single = run(whole, 2)
    shares = [run(loader, 2) for loader in ranks]
    assert len(ranks[0]) == len(whole) == len(single) == len(shares[0]) == len(shares[1])
    for batch, first, second in zip(single, *shares, strict=True):
        assert torch.equal(torch.cat([first[2], second[2]]), batch[2])
        assert torch.equal(torch.cat([first[0], second[0]]), batch[0])  # the same crops and flips
