"""Every experiment file is built, not just composed, and takes two training steps.

For each ``configs/experiment/*.yaml`` (enumerated from the folder, so new cells are covered as they
appear): compose it as the command line would, check the recipe it names (reference speed settings,
batch size, schedule), then build the models, optimiser, scheduler, distiller and loaders through
``distillbench.build.build_trainer`` on generated data in the real on-disk layout, with random-weight
teacher checkpoints saved as ``{'model': state_dict}``. The scheduler is stepped through every epoch
and the lr of each epoch compared with the recipe (the config's milestones and gamma, or the cosine
formula). Then two steps of ``Trainer.steps()`` run with the batch shrunk (after the recipe's batch
size was checked) and small images where the recipe's crop is large (ImageNet).

One process shares the generated data, the teacher files and the loaded teachers. The module is marked
``slow``: composing ~300 experiments alone takes about a minute on two CPU cores.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image

import distillbench.build as building
from distillbench.build import build_trainer
from distillbench.data import write_fake_cifar100
from distillbench.models import create_model
from tests.helpers import CONFIG_DIR, compose_config

pytestmark = pytest.mark.slow

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# The reference settings every experiment composes to unless trainer=fast is chosen.
REFERENCE_SPEED = {"precision": "float32", "channels_last": False, "fused_optimizer": False, "teacher_cache": False,
                   "compile": False}
# The published recipes' training batch per dataset: RepDistiller's CIFAR-100 batch 64; mdistiller @ a08d46f
# configs/imagenet/*/{kd,at,dkd,dot}.yaml 512 and {crd,reviewkd}.yaml 256 (CRCD follows CRD); RRD's transfer script
# 64; mdistiller configs/tiny_imagenet/dot/*.yaml 256. CKD's CIFAR batches are per pair (its released configs).
RECIPE_BATCH = {"cifar100": 64, "digits": 64, "imagenet": 512, "stl10": 64, "tiny_imagenet": 64, "tinyimagenet": 256}
IMAGENET_BATCH_256 = ("crd", "crcd", "reviewkd")
# Generated data: small enough for two CPU steps, large enough for every sampler (classes, negatives, batches).
# STEP_BATCH: RKD's minimum batch (Distiller.min_batch_size).
N_TRAIN, N_TEST, STEP_BATCH = 12, 2, 3
IMAGENET_STEP_SIZE = 64  # RandomResizedCrop / CenterCrop side for the two steps (the recipe's 224 is checked first)


# ------------------------------------------------------------------------------------------------ data on disk
def _jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)


def write_image_folder(root: Path, classes: int, per_class: int, test_per_class: int) -> None:
    """ILSVRC-2012's ImageFolder layout: <root>/{train,val}/<wnid>/*.JPEG."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        wnid = f"n{c:08d}"
        for i in range(per_class):
            _jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG", rng, (40, 30))
        for i in range(test_per_class):
            _jpeg(root / "val" / wnid / f"ILSVRC2012_val_{c:04d}{i}.JPEG", rng, (30, 40))


def write_tiny_imagenet(root: Path, classes: int, per_class: int, test_per_class: int) -> None:
    """tiny-imagenet-200.zip extracted: wnids.txt, train/<wnid>/images/*.JPEG, val/images + val_annotations.txt."""
    rng = np.random.default_rng(0)
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{c:08d}" for c in range(classes)]
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for wnid in wnids:
        for i in range(per_class):
            _jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", rng, (64, 64))
        for i in range(test_per_class):
            name = f"val_{wnid}_{i}.JPEG"
            _jpeg(folder / "val" / "images" / name, rng, (64, 64))
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def write_stl10(root: Path, n_train: int, n_test: int) -> None:
    """torchvision's stl10_binary/{train,test}_{X,y}.bin: column-major 96x96x3 uint8 images, labels 1..10."""
    rng = np.random.default_rng(0)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())
        (folder / f"{split}_y.bin").write_bytes((np.arange(n) % 10 + 1).astype(np.uint8).tobytes())


class Fixtures:
    """Data roots and teacher files, made once per dataset and architecture for the whole module."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.roots: dict[str, Path] = {}
        self.checkpoints: dict[tuple[str, int], Path] = {}

    def root(self, dataset: str) -> Path | None:
        if dataset == "digits":  # ships with scikit-learn
            return None
        if dataset not in self.roots:
            root = self.folder / "data" / dataset
            if dataset == "cifar100":
                write_fake_cifar100(root, n_train=N_TRAIN, n_test=N_TEST, seed=0)
            elif dataset == "imagenet":
                write_image_folder(root, classes=N_TRAIN // 4, per_class=4, test_per_class=1)
            elif dataset in ("tiny_imagenet", "tinyimagenet"):
                write_tiny_imagenet(root, classes=N_TRAIN // 4, per_class=4, test_per_class=1)
            elif dataset == "stl10":
                write_stl10(root, N_TRAIN, N_TEST)
            else:
                raise AssertionError(f"No generated data for dataset '{dataset}': add its on-disk layout here.")
            self.roots[dataset] = root
        return self.roots[dataset]

    def checkpoint(self, arch: str, num_classes: int, size: int = 32) -> Path:
        """Random weights for ``arch`` as {'model': state_dict}, the format teacher.checkpoint takes.

        Its BatchNorm statistics are those of random ``size`` x ``size`` images, as a trained network's
        are of its data: with the initial statistics (mean 0, variance 1) a deep random network's activations
        grow with its depth in eval mode, and two-stage methods (FSP, FT) that match them overflow.
        """
        key = (arch, num_classes)
        if key not in self.checkpoints:
            torch.manual_seed(0)
            path = self.folder / "teachers" / f"{arch}_{num_classes}.pth"
            path.parent.mkdir(parents=True, exist_ok=True)
            model = create_model(arch, num_classes=num_classes)
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.momentum = None  # a cumulative average over the calibration batches
            model.train()
            with torch.no_grad():
                for _ in range(2):
                    model(torch.randn(8, 3, size, size))
            torch.save({"model": model.state_dict()}, path)
            self.checkpoints[key] = path
        return self.checkpoints[key]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Fixtures:
    return Fixtures(tmp_path_factory.mktemp("every_experiment"))


@pytest.fixture(scope="module", autouse=True)
def shared_teachers():
    """One loaded teacher per (architecture, classes, checkpoint) for the whole module: loading a checkpoint is
    most of a build's time, and every teacher here is the same random-weight file. The first build of each goes
    through the real ``build_teacher``."""
    built: dict[tuple, torch.nn.Module] = {}
    real = building.build_teacher

    def cached(cfg, num_classes):
        key = (cfg.teacher.arch, num_classes, str(cfg.teacher.checkpoint))
        if key not in built:
            built[key] = real(cfg, num_classes)
        return built[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(building, "build_teacher", cached)
        yield


# ------------------------------------------------------------------------------------------------ the recipe
def expected_lrs(sched: dict, base_lr: float, epochs: int) -> list[float]:
    """The lr of epochs 1..epochs as the recipe states it, the scheduler stepped once after each epoch."""
    target = sched["_target_"].rsplit(".", 1)[-1]
    if target == "MultiStepLR":
        milestones, gamma = sched["milestones"], sched.get("gamma", 0.1)
        return [base_lr * gamma ** sum(m <= e - 1 for m in milestones) for e in range(1, epochs + 1)]
    if target == "CosineAnnealingLR":
        t_max, eta_min = sched["T_max"], sched.get("eta_min", 0.0)
        return [eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * (e - 1) / t_max)) / 2
                for e in range(1, epochs + 1)]
    raise AssertionError(f"No recipe formula for scheduler {sched['_target_']}: add it here.")


def recipe_batch(cfg) -> int:
    if cfg.dataset.name == "imagenet" and cfg.distiller.name in IMAGENET_BATCH_256:
        return 256
    if cfg.distiller.name == "ckd" and cfg.dataset.name == "cifar100":
        from scripts.make_experiments import CKD_RECIPE, PAIR_OF  # CKD's released per-pair batches

        return CKD_RECIPE[PAIR_OF[(cfg.teacher.arch, cfg.student.arch)]][0]
    assert cfg.dataset.name in RECIPE_BATCH, f"add the recipe's batch size of dataset '{cfg.dataset.name}' here"
    return RECIPE_BATCH[cfg.dataset.name]


def jobs_of(name: str, cfg) -> list[tuple[str, object]]:
    """(job, config) pairs: the experiment itself, or each job of a multi-job experiment (quickstart)."""
    if not cfg.get("jobs"):
        return [(name, cfg)]
    base = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "jobs"])
    return [(f"{name}/{job}", OmegaConf.merge(base, patch)) for job, patch in cfg.jobs.items()]


def cap_negatives(spec, limit: int) -> None:
    """Contrastive negatives per sample must be fewer than the generated set holds."""
    if OmegaConf.is_dict(spec):
        for key in list(spec.keys()):
            if key == "num_negatives" and spec[key] > limit:
                spec[key] = limit
            else:
                cap_negatives(spec[key], limit)


def prepare(cfg, fixtures: Fixtures, run_dir: Path, step_batch: int | None = None) -> None:
    """Point the config at generated data and random teachers, CPU-sized; the recipe values were checked before."""
    with open_dict(cfg):
        root = fixtures.root(cfg.dataset.name)
        if root is not None:
            cfg.dataset.root = str(root)
        if "verify_checksums" in cfg.dataset:
            cfg.dataset.verify_checksums = False
        cfg.dataset.num_workers = 0
        cfg.dataset.test_num_workers = 0
        cfg.dataset.batch_size = step_batch or STEP_BATCH
        cfg.dataset.test_batch_size = N_TEST
        if cfg.dataset.name == "imagenet":
            cfg.dataset.build.train_transform = {"_target_": "distillbench.data.imagenet.imagenet_train_transform",
                                                 "size": IMAGENET_STEP_SIZE}
            cfg.dataset.build.test_transform = {"_target_": "distillbench.data.imagenet.imagenet_test_transform",
                                                "size": IMAGENET_STEP_SIZE, "resize": IMAGENET_STEP_SIZE + 8}
        cfg.trainer.device = "cpu"
        cfg.trainer.progress = False
        cfg.logger.wandb.mode = "disabled"
        cfg.logger.console = False
        cfg.paths.runs = str(run_dir.parent)
        cfg.paths.cache = str(run_dir.parent / "cache")
        cfg.run_dir = str(run_dir)
        num_classes = cfg.dataset.num_classes
        if cfg.role == "student" and cfg.distiller.method is not None:
            size = {"imagenet": IMAGENET_STEP_SIZE, "tinyimagenet": 64}.get(cfg.dataset.name, 32)
            cfg.teacher.checkpoint = str(fixtures.checkpoint(cfg.teacher.arch, num_classes, size))
            cap_negatives(cfg.distiller.method, N_TRAIN // 3)
            if "init_epochs" in cfg.distiller.method:
                cfg.distiller.method.init_epochs = 1
        if cfg.role == "probe":
            cfg.probe.checkpoint = str(fixtures.checkpoint(cfg.probe.arch, cfg.probe.source_num_classes))
        if cfg.role == "eval":  # a released teacher, evaluated: random weights stand in for the download
            size = {"imagenet": IMAGENET_STEP_SIZE, "tinyimagenet": 64}.get(cfg.dataset.name, 32)
            cfg.teacher.checkpoint = str(fixtures.checkpoint(cfg.teacher.arch, num_classes, size))


def check_schedule(trainer, cfg, sched: dict, epochs: int, base_lr: float) -> None:
    """Step the run's scheduler through every epoch; each epoch's lr must be the recipe's."""
    optimizer = trainer.make_optimizer([p for p in trainer.model.parameters() if p.requires_grad])
    scheduler = trainer.make_scheduler(optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(base_lr)
    want = expected_lrs(sched, base_lr, epochs)
    milestones = set(sched.get("milestones", []))
    for epoch in range(1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        assert lr == pytest.approx(want[epoch - 1], rel=1e-6, abs=1e-12), (cfg.name, epoch, lr, want[epoch - 1])
        if epoch - 1 in milestones or epoch in (1, epochs):  # the milestones named in the recipe, and both ends
            assert lr == pytest.approx(want[epoch - 1], rel=1e-9, abs=1e-15)
        optimizer.step()
        scheduler.step()


def built_jobs(name: str, fixtures: Fixtures, tmp_path: Path, step_batch: int | None = None):
    """Each job of experiment ``name``: its recipe checked, then built on generated data; yields (job, trainer)."""
    composed = compose_config([f"experiment={name}"])
    for job, cfg in jobs_of(name, composed):
        # Reference settings: every paper trained in float32 with the reference loader (trainer=fast is opt-in).
        assert {k: cfg.trainer[k] for k in REFERENCE_SPEED} == REFERENCE_SPEED, job
        assert cfg.dataset.loader == "torch", job
        assert cfg.dataset.batch_size == recipe_batch(cfg), job
        if cfg.dataset.name == "imagenet":
            assert "train_transform" not in cfg.dataset.build  # the recipe's 224 crop, shrunk below for the steps
        sched = OmegaConf.to_container(cfg.sched, resolve=True)
        epochs, base_lr = cfg.trainer.epochs, cfg.optim.lr
        if "T_max" in sched:
            assert sched["T_max"] == epochs, job
        assert all(m < epochs for m in sched.get("milestones", [])), job

        cfg = cfg.copy()
        run_dir = tmp_path / job.replace("/", "_") / "seed0"
        prepare(cfg, fixtures, run_dir, step_batch)
        trainer = build_trainer(cfg, run_dir)
        yield job, cfg, trainer, sched, epochs, base_lr


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_builds_follows_its_recipe_and_trains_two_steps(name, fixtures, tmp_path):
    for job, cfg, trainer, sched, epochs, base_lr in built_jobs(name, fixtures, tmp_path):
        if cfg.role == "eval":  # trains nothing: the evaluation runs and is summarised
            assert trainer.epochs == 0
            summary = trainer.fit()
            assert summary["acc1_last"] == summary["acc1_best"] and summary["job_type"] == "teacher", job
            continue
        check_schedule(trainer, cfg, sched, epochs, base_lr)
        assert trainer.train_loader.batch_size == STEP_BATCH
        if cfg.role == "student" and cfg.distiller.method is not None:
            assert trainer.teacher is not None and trainer.distiller is not None, job
        seen = []
        trainer.on_step = lambda step, terms, seen=seen: seen.append({k: float(v) for k, v in terms.items()})
        steps = trainer.steps()
        try:
            next(steps)
            next(steps)
        finally:
            steps.close()
        assert len(seen) == 2, job
        # The first step's terms are finite. The second can overflow with a random deep teacher (CC on a random
        # resnet110: ~1e16 at step 1), which says nothing about the recipe, so only the first is checked. A
        # two-stage method's extras were trained on the random teacher's maps in its init stage (FT's
        # paraphraser on ResNet50's 1024-channel maps at lr 0.05 leaves the factor non-finite), so for those
        # only the cross-entropy, which that stage cannot reach, is checked.
        two_stage = trainer.distiller is not None and trainer.distiller.init_epochs > 0
        checked = {"ce": seen[0]["ce"]} if two_stage else seen[0]
        assert all(math.isfinite(v) for v in checked.values()), (job, seen)
