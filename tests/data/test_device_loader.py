"""The device-resident loader serves the reference path's batches, bit for bit where it can."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as tv
from torchvision.transforms import functional as TF

from distillbench.data import CIFAR100_MEAN, CIFAR100_STD, InstanceDataset, test_transform, train_transform
from distillbench.data.device_loader import DeviceLoader, EpochPlan, make_device_loaders, recipe_of
from distillbench.data.sampling import EpochShuffleSampler

Batch = tuple[Tensor, Tensor, Tensor]


def make_sets(
    n: int = 70, size: int = 32, seed: int = 0, mean=CIFAR100_MEAN, std=CIFAR100_STD, **train_kwargs
) -> tuple[InstanceDataset, InstanceDataset]:
    """Random pixels, with the extremes 0 and 255 present, under the recipe's transforms."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    data[0, :2] = 0
    data[0, -2:] = 255
    targets = rng.integers(0, 10, size=n)
    train = InstanceDataset(data, targets, train_transform(mean, std, size=size, **train_kwargs), num_classes=10)
    test = InstanceDataset(data, targets, test_transform(mean, std), num_classes=10)
    return train, test


def reference(
    pixels: np.ndarray, top: int, left: int, flip: bool, size: int = 32, padding: int = 4,
    mean=CIFAR100_MEAN, std=CIFAR100_STD,
) -> Tensor:
    """torchvision's pipeline on the PIL image, with the crop and flip given instead of drawn."""
    image = TF.crop(TF.pad(Image.fromarray(pixels), padding, fill=0), top, left, size, size)
    if flip:
        image = TF.hflip(image)
    return TF.normalize(TF.to_tensor(image), list(mean), list(std))


def shuffled(train: InstanceDataset, batch_size: int = 16, seed: int = 0, channels_last: bool = False) -> DeviceLoader:
    return DeviceLoader(train, batch_size, "cpu", recipe_of(train.transform), shuffle=True, seed=seed,
                        channels_last=channels_last)


def epoch(loader: DeviceLoader) -> list[Batch]:
    return list(loader)


def cat(batches: list[Batch]) -> Batch:
    images, labels, index, _ = zip(*batches, strict=True)
    return torch.cat(images), torch.cat(labels), torch.cat(index)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_equals_torchvision_bit_for_bit_for_given_parameters(channels_last: bool) -> None:
    train, _ = make_sets(n=8)
    loader = shuffled(train, 4, channels_last=channels_last)
    cases = list(itertools.product([0, 3, 8], [0, 5, 8], [False, True]))
    samples = [k % len(train) for k in range(len(cases))]
    top, left, flip = (torch.tensor(column) for column in zip(*cases, strict=True))
    images, labels, index, _ = loader.make_batch(EpochPlan(torch.tensor(samples), top, left, flip))
    assert images.dtype == torch.float32 and images.shape == (len(cases), 3, 32, 32)
    assert images.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for row, (sample, (t, lft, f)) in enumerate(zip(samples, cases, strict=True)):
        assert torch.equal(images[row], reference(train.data[sample], t, lft, f)), (sample, t, lft, f)
    assert torch.equal(labels, torch.from_numpy(train.targets[samples]))
    assert torch.equal(index, torch.tensor(samples))


def test_flips_without_a_crop_and_the_images_are_held_as_uint8_nchw() -> None:
    train, _ = make_sets(n=12)
    train.transform = tv.Compose([tv.RandomHorizontalFlip(), tv.ToTensor(), tv.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
    loader = shuffled(train, 5)
    assert loader.images.dtype == torch.uint8 and loader.images.shape == (12, 3, 32, 32)
    plan = loader.plan()
    assert plan.top is None and plan.left is None and plan.flip is not None
    images, _, index = cat(epoch(loader))
    for k, sample in enumerate(index.tolist()):
        expected = reference(train.data[sample], 4, 4, bool(plan.flip[k]))  # the unpadded image
        assert torch.equal(images[k], expected), k


def test_served_samples_are_their_index_under_the_planned_augmentation() -> None:
    train, _ = make_sets()
    loader = shuffled(train, 16, seed=5)
    loader.set_epoch(3)
    plan = loader.plan()
    images, labels, index = cat(epoch(loader))
    assert torch.equal(index, plan.index)
    assert index.dtype == torch.int64 and labels.dtype == torch.int64
    assert torch.equal(labels, torch.from_numpy(train.targets)[index])
    for k, sample in enumerate(index.tolist()):
        expected = reference(train.data[sample], int(plan.top[k]), int(plan.left[k]), bool(plan.flip[k]))
        assert torch.equal(images[k], expected), k


@pytest.mark.parametrize("seed", [0, 7])
def test_epoch_order_is_the_reference_samplers(seed: int) -> None:
    train, _ = make_sets()
    loader = shuffled(train, 16, seed=seed)
    sampler = EpochShuffleSampler(len(train), seed)
    for e in (1, 2, 3):
        loader.set_epoch(e)
        sampler.set_epoch(e)
        assert cat(epoch(loader))[2].tolist() == list(sampler)


def test_batches_keep_the_last_partial_one_unless_drop_last() -> None:
    train, _ = make_sets(n=70)
    loader = shuffled(train)
    assert len(loader) == 5
    assert [len(b[0]) for b in loader] == [16, 16, 16, 16, 6]
    dropping = DeviceLoader(train, 16, "cpu", recipe_of(train.transform), shuffle=True, drop_last=True)
    assert len(dropping) == 4
    assert [len(b[0]) for b in dropping] == [16] * 4
    loader.set_epoch(1, skip=32)
    assert len(loader) == 3
    assert [len(b[0]) for b in loader] == [16, 16, 6]


def test_crop_offsets_and_flips_are_uniform() -> None:
    # 9000 draws: 1000 expected per offset (sd ~30) and 4500 flips (sd ~47); the bounds are 6 sd away.
    train, _ = make_sets(n=9000, size=8, padding=4)
    plan = shuffled(train, 64).plan()
    for offsets in (plan.top, plan.left):
        counts = torch.bincount(offsets, minlength=9)
        assert len(counts) == 9 and offsets.min() == 0
        assert counts.min() > 800 and counts.max() < 1200, counts
    assert 4200 < int(plan.flip.sum()) < 4800
    joint = torch.bincount(plan.top * 9 + plan.left, minlength=81)
    assert joint.min() > 50, "top and left should vary independently"


def test_same_seed_and_epoch_give_the_same_batches() -> None:
    train, _ = make_sets()
    first = shuffled(train, 16, seed=1)
    second = shuffled(train, 16, seed=1)
    first.set_epoch(2)
    second.set_epoch(2)
    batches = epoch(first)
    for a, b in zip(batches, epoch(second), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    second.set_epoch(3)
    other_epoch = cat(epoch(second))
    assert not torch.equal(cat(batches)[2], other_epoch[2])
    other_seed = shuffled(train, 16, seed=2)
    other_seed.set_epoch(2)
    assert not torch.equal(cat(batches)[0], cat(epoch(other_seed))[0])
    first.set_epoch(2)
    assert torch.equal(cat(epoch(first))[0], cat(batches)[0])


def test_resuming_mid_epoch_serves_the_rest_of_the_uninterrupted_epoch() -> None:
    train, _ = make_sets()
    loader = shuffled(train, 16, seed=4)
    loader.set_epoch(6)
    full = epoch(loader)
    loader.set_epoch(6, skip=32)
    resumed = epoch(loader)
    assert len(resumed) == len(full) - 2
    for a, b in zip(resumed, full[2:], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    loader.set_epoch(6, skip=5)
    rest, everything = cat(epoch(loader)), cat(full)
    assert all(torch.equal(x, y[5:]) for x, y in zip(rest, everything, strict=True))


def test_set_epoch_refuses_a_skip_beyond_the_epoch() -> None:
    train, _ = make_sets(n=10)
    loader = shuffled(train, 4)
    with pytest.raises(ValueError, match="skip"):
        loader.set_epoch(1, skip=11)
    loader.set_epoch(1, skip=10)
    assert len(loader) == 0 and epoch(loader) == []


@pytest.mark.parametrize("channels_last", [False, True])
def test_test_loader_is_to_tensor_and_normalize_in_order(channels_last: bool) -> None:
    train, test = make_sets(n=70)
    _, loader = make_device_loaders(train, test, 16, 32, "cpu", channels_last=channels_last)
    batches = epoch(loader)
    assert [len(b[0]) for b in batches] == [32, 32, 6]
    images, labels, index = cat(batches)
    assert torch.equal(index, torch.arange(70))
    assert torch.equal(labels, torch.from_numpy(test.targets))
    for k in range(len(test)):
        assert torch.equal(images[k], test[k][0]), k
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last) == channels_last
    loader.set_epoch(9)
    assert torch.equal(cat(epoch(loader))[0], images)


def test_mean_std_and_flip_come_from_the_datasets_transforms() -> None:
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    train, test = make_sets(mean=mean, std=std, hflip=False)
    loader, test_loader = make_device_loaders(train, test, 16, 16, "cpu", seed=3)
    plan = loader.plan()
    assert plan.flip is None
    images, _, index = cat(epoch(loader))
    for k, sample in enumerate(index.tolist()):
        expected = reference(train.data[sample], int(plan.top[k]), int(plan.left[k]), False, mean=mean, std=std)
        assert torch.equal(images[k], expected), k
    assert torch.equal(cat(epoch(test_loader))[0][3], test[3][0])
    assert train[0][0].shape == (3, 32, 32) and loader.dataset is train


@pytest.mark.parametrize(
    "transform",
    [
        tv.Compose([tv.ColorJitter(0.4), tv.ToTensor(), tv.Normalize(CIFAR100_MEAN, CIFAR100_STD)]),
        tv.Compose([tv.RandomCrop(32, padding=4, padding_mode="reflect"), tv.ToTensor(),
                    tv.Normalize(CIFAR100_MEAN, CIFAR100_STD)]),
        tv.Compose([tv.RandomHorizontalFlip(), tv.RandomCrop(32, padding=4), tv.ToTensor(),
                    tv.Normalize(CIFAR100_MEAN, CIFAR100_STD)]),
        tv.Compose([tv.ToTensor()]),
        tv.ToTensor(),
    ],
)
def test_transforms_it_cannot_reproduce_are_refused(transform) -> None:
    with pytest.raises(ValueError, match="device loader"):
        recipe_of(transform)


def test_a_random_test_transform_is_refused() -> None:
    train, _ = make_sets(n=10)
    with pytest.raises(ValueError, match="deterministic"):
        make_device_loaders(train, train, 4, 4, "cpu", seed=0)


@pytest.mark.cuda
def test_an_epoch_never_waits_for_the_device() -> None:
    train, test = make_sets()
    loaders = make_device_loaders(train, test, 16, 16, "cuda", channels_last=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for loader in loaders:
            loader.set_epoch(2, skip=16 if loader.shuffle else 0)
            batches = epoch(loader)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(t.is_cuda for t in batches[0])


def test_view_numbers_name_the_crop_and_flip_each_sample_got() -> None:
    train, _ = make_sets(n=40)
    loader = shuffled(train, 16)
    assert loader.num_views == 9 * 9 * 2
    served = epoch(loader)
    views = torch.cat([b[3] for b in served])
    assert views.min() >= 0 and views.max() < loader.num_views
    assert len(views.unique()) > 20  # drawn, not constant
    for images, _, index, view in served:
        again = loader.make_batch(EpochPlan.of_views(index, view, loader.spans))
        assert torch.equal(again[0], images)
        assert torch.equal(again[3], view)
