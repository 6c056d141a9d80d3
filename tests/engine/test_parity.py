"""Fast path against reference path: fifty steps of CRD+KD from the same initial weights on the same batches.

Reference: a DataLoader-style loader that builds every sample with torchvision's PIL operations, a
live float32 teacher, contiguous tensors, torch's default (foreach) SGD. Fast: the device-resident
loader, the teacher-output cache, channels_last, fused SGD and ``torch.compile`` (the eager backend,
so the test needs no C++ toolchain), in float32 and in bf16. The batches are the same by
construction: the reference loader serves the device loader's plan of crops and flips.

Float32 switches only reorder floating-point sums, so the first steps agree to round-off; over
fifty SGD steps with batch-16 BatchNorm that round-off grows (measured here: below 1e-7 for ten
steps, 1.6e-3 at worst by step 50), hence two float32 bounds. bf16 autocast rounds the student's
activations to 8 bits of mantissa; its trajectory stays within ``BF16_LOSS_TOLERANCE`` (measured:
2.4e-2 at worst). channels_last is checked only under bf16 here: on the CPU, oneDNN's NHWC kernels
give about 1e-3 relative gradient error against float64 (NCHW: 4e-6), which is not what a GPU does.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from hydra.utils import instantiate
from PIL import Image

from distillbench.data.device_loader import DeviceLoader, make_device_loaders
from distillbench.data.instance import InstanceDataset
from distillbench.data.transforms import test_transform, train_transform
from distillbench.engine.speed import SpeedOptions
from distillbench.engine.trainer import Trainer
from distillbench.loggers import LoggerGroup, RunInfo
from distillbench.models import create_model
from tests.helpers import compose_config

STEPS, BATCH, CLASSES = 50, 16, 10
FLOAT32_EARLY_STEPS, FLOAT32_EARLY_TOLERANCE = 10, 1e-6
FLOAT32_LOSS_TOLERANCE = 5e-3
BF16_LOSS_TOLERANCE = 5e-2
# ||w_fast - w_ref|| / ||w_ref|| after the fifty float32 steps.
WEIGHT_TOLERANCE = 2e-2  # measured: 6.7e-3


class SmallTeacher(torch.nn.Module):
    """A cheap frozen teacher with the zoo's ``is_feat`` interface: the cache holds 162 views of 800 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.fc = torch.nn.Linear(16, CLASSES)

    def forward(self, x, is_feat=False, preact=False):
        mid = torch.relu(self.bn(self.conv(x)))
        pooled = mid.mean(dim=(2, 3))
        logits = self.fc(pooled)
        return ([mid, pooled], logits) if is_feat else logits


class PlannedPILLoader:
    """The reference pipeline's per-sample PIL transforms, applied with the device loader's crops and flips."""

    def __init__(self, planner: DeviceLoader):
        self.planner = planner
        self.dataset = planner.dataset
        self.batch_size = planner.batch_size
        mean, std = planner.recipe.mean, planner.recipe.std
        self.normalize = partial(TF.normalize, mean=list(mean), std=list(std))

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.planner.set_epoch(epoch, skip)

    def __len__(self) -> int:
        return len(self.planner)

    def __iter__(self):
        plan, pad = self.planner.plan(), self.planner.recipe.padding
        for start in range(0, len(plan.index), self.batch_size):
            part = plan[start:start + self.batch_size]
            images = []
            for k, i in enumerate(part.index.tolist()):
                image = TF.crop(TF.pad(Image.fromarray(self.dataset.data[i]), pad, fill=0),
                                int(part.top[k]), int(part.left[k]), 32, 32)
                if part.flip[k]:
                    image = TF.hflip(image)
                images.append(self.normalize(TF.to_tensor(image)))
            yield torch.stack(images), torch.as_tensor(self.dataset.targets)[part.index], part.index


def datasets():
    rng = np.random.default_rng(0)
    labels = np.arange(STEPS * BATCH) % CLASSES
    # Class-dependent colour so the networks have something to learn.
    base = rng.integers(0, 256, size=(CLASSES, 1, 1, 3))
    images = np.clip(base[labels] + rng.normal(0, 40, size=(len(labels), 32, 32, 3)), 0, 255).astype(np.uint8)
    train = InstanceDataset(images, labels, transform=train_transform(), num_classes=CLASSES)
    test = InstanceDataset(images[:40], labels[:40], transform=test_transform(), num_classes=CLASSES)
    return train, test


def trajectory(tmp_path, fast: bool, speed: SpeedOptions, cache_dir=None) -> tuple[list[float], dict]:
    train, test = datasets()
    train_loader, test_loader = make_device_loaders(train, test, BATCH, 40, "cpu", seed=0,
                                                    channels_last=speed.channels_last)
    if not fast:
        train_loader = PlannedPILLoader(train_loader)
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=CLASSES)
    torch.manual_seed(1)
    teacher = SmallTeacher()
    cfg = compose_config(["distiller=crd_kd", "distiller.method.crd.num_negatives=64"])
    losses: list[torch.Tensor] = []
    trainer = Trainer(
        model=student, teacher=teacher, distiller=instantiate(cfg.distiller.method), ce_weight=cfg.distiller.ce_weight,
        train_loader=train_loader, test_loader=test_loader,
        make_optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4, fused=fast),
        make_scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[10]),
        epochs=1, run_dir=tmp_path, logger=LoggerGroup([]),
        info=RunInfo(name="parity", job_type="student", run_dir=str(tmp_path), seed=0),
        progress=False, speed=speed, teacher_cache_dir=cache_dir if fast else None,
        on_step=lambda step, terms: losses.append(terms["loss"]),
    )
    trainer.fit()
    assert (trainer.teacher_cache is not None) == fast
    return [float(x) for x in losses], {k: v.clone() for k, v in student.state_dict().items()}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One cache file for the module: both fast trajectories use the same teacher and images."""
    return tmp_path_factory.mktemp("teacher_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return trajectory(tmp_path_factory.mktemp("reference"), fast=False, speed=SpeedOptions())


def test_the_reference_loader_serves_the_device_loaders_pixels() -> None:
    train, test = datasets()
    device_loader, _ = make_device_loaders(train, test, BATCH, 40, "cpu", seed=0)
    for (fast_images, *_), (ref_images, *_) in zip(device_loader, PlannedPILLoader(device_loader), strict=True):
        assert torch.equal(fast_images, ref_images)


def test_float32_fast_path_follows_the_reference_trajectory(reference, cache_dir, tmp_path) -> None:
    ref_losses, ref_weights = reference
    losses, weights = trajectory(tmp_path, fast=True, speed=SpeedOptions(precision="float32"), cache_dir=cache_dir)
    assert len(losses) == len(ref_losses) == STEPS
    assert ref_losses[-1] < ref_losses[0]  # it trains
    early = FLOAT32_EARLY_STEPS
    np.testing.assert_allclose(losses[:early], ref_losses[:early], rtol=FLOAT32_EARLY_TOLERANCE)
    np.testing.assert_allclose(losses, ref_losses, rtol=FLOAT32_LOSS_TOLERANCE)
    params = [name for name in ref_weights if ref_weights[name].is_floating_point()]
    drift = torch.cat([(weights[n] - ref_weights[n]).flatten() for n in params]).norm()
    size = torch.cat([ref_weights[n].flatten() for n in params]).norm()
    assert drift / size < WEIGHT_TOLERANCE, float(drift / size)


def test_bf16_fast_path_stays_within_the_documented_tolerance(reference, cache_dir, tmp_path) -> None:
    ref_losses, _ = reference
    speed = SpeedOptions(precision="bf16", channels_last=True)
    losses, _ = trajectory(tmp_path, fast=True, speed=speed, cache_dir=cache_dir)
    relative = np.abs(np.array(losses) - ref_losses) / np.abs(ref_losses)
    assert relative.max() < BF16_LOSS_TOLERANCE
    assert relative.max() > 0  # bf16 really ran
