"""Recipe details pinned to the reference code: CKD's ImageNet schedule, RRD's transfer-probe BatchNorm mode,
CRCD's switch-off iteration, RRD's drop_last, and the last batch too small for a method."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from distillbench.build import build_loaders, build_trainer
from distillbench.data import write_fake_cifar100
from distillbench.data.loaders import last_batch_dropped
from distillbench.distillers import KD, Combined
from distillbench.distillers.rkd import RKD
from distillbench.models import create_model
from distillbench.runtime.distributed import DistContext
from tests.distillers.test_crcd import probe, step_batch, tiny_pair
from tests.helpers import compose_config, tiny_run_overrides
from tests.test_every_experiment_builds import write_image_folder, write_stl10

CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------- CKD on ImageNet
@pytest.mark.parametrize("name", ["ckd_imagenet_r34_r18", "ckd_imagenet_r50_mv1"])
def test_ckd_imagenet_runs_ckds_cosine_schedule_with_only_its_own_keys(name):
    """ZhouXinzzzzz/CKD @ f16a145 configs/imagenet/{r34_r18,r50_mv1}/ckd.yaml:15-20 (batch 512, 200 epochs, lr 0.2,
    cosine to 0, wd 1e-4) and mdistiller/engine/trainer.py:48-49 (CosineAnnealingLR, T_max = epochs). The pair's
    30/60/90 milestones used to reach CosineAnnealingLR, which refused them."""
    cfg = compose_config([f"experiment={name}"])
    assert "milestones" not in cfg.sched and "gamma" not in cfg.sched
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    scheduler = instantiate(cfg.sched)(optimizer)
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert (scheduler.T_max, scheduler.eta_min) == (200, 0.0)
    assert (cfg.dataset.batch_size, cfg.trainer.epochs, cfg.optim.lr, cfg.optim.weight_decay) == (512, 200, 0.2, 1e-4)
    assert (cfg.distiller.method.weight, cfg.distiller.method.temperature) == (10.0, 1.0)
    for _ in range(100):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # half-way down the cosine, epoch 101


@pytest.mark.parametrize("name", ["kd_imagenet_r34_r18", "crd_imagenet_r50_mv1", "dkd_imagenet_r34_r18"])
def test_other_imagenet_cells_keep_the_step_schedule(name):
    cfg = compose_config([f"experiment={name}"])
    assert cfg.sched._target_.endswith("MultiStepLR") and list(cfg.sched.milestones) == [30, 60, 90]
    assert cfg.sched.gamma == 0.1 and cfg.trainer.epochs == 100


# ------------------------------------------------------------------------------- transfer probe BatchNorm
def _bn_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("freeze_bn", [None, True])
def test_probe_bn_follows_rrds_transfer_script_by_default(freeze_bn, tmp_path):
    """giakoumoglou/rrd @ 45e1cf8 transfer_student.py:205 calls model.train() on the whole network: the frozen
    backbone's BN running statistics move to the target set during a probe epoch. probe.freeze_bn=true keeps them."""
    root = tmp_path / "data"
    write_stl10(root, n_train=8, n_test=4)
    torch.manual_seed(0)
    checkpoint = tmp_path / "wrn_16_2.pth"
    torch.save({"model": create_model("resnet8", num_classes=100).state_dict()}, checkpoint)
    overrides = ["experiment=transfer_crd_stl10", "student=resnet8", "trainer.epochs=1", "dataset.batch_size=4",
                 "dataset.test_batch_size=4", f"probe.checkpoint={checkpoint}",
                 *[o for o in tiny_run_overrides(root, tmp_path / "runs") if "verify_checksums" not in o
                   and "batch_size" not in o]]
    if freeze_bn is not None:
        overrides.append(f"probe.freeze_bn={str(freeze_bn).lower()}")
    cfg = compose_config(overrides, run_dir=tmp_path / "run")
    assert cfg.probe.freeze_bn is (freeze_bn is True)
    trainer = build_trainer(cfg, tmp_path / "run")
    before = _bn_state(trainer.model.backbone)
    trainer.fit()
    after = _bn_state(trainer.model.backbone)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    if freeze_bn:
        assert not moved
    else:
        assert moved and any("running_mean" in k for k in moved)


# ------------------------------------------------------------------------------------ CRCD's switch-off
def _crcd(cfg, num_samples: int):
    with open_dict(cfg):
        cfg.distiller.method.num_negatives = 6
        cfg.distiller.method.feat_dim = 8
    crcd = instantiate(cfg.distiller.method)
    crcd.setup(probe(6), probe(6), torch.arange(num_samples) % 7)
    return crcd.double()


def _terms_at(crcd, iteration: int) -> dict[str, float]:
    student, teacher = tiny_pair()
    batch = step_batch(1)
    crcd.iteration.fill_(iteration)
    terms = crcd(student(batch.images), teacher(batch.images), batch, epoch=1)
    assert int(crcd.iteration) == iteration + 1  # a training forward counts one iteration
    return {k: float(v.detach()) for k, v in terms.items()}


def test_crcd_switches_off_at_the_reference_iteration_for_250_epochs():
    """Lechatelia/CRCD @ f9176f6 helper/loops.py:80-81 and :211: on while (epoch-1)*len(loader)+idx <
    epochs*len(loader)*24/25. CIFAR-100, batch 64 (782 iterations, last partial batch kept), 250 epochs:
    195,500 iterations, off from 187,680 on, the first iteration of epoch 241 (the old code: after epoch 240 by
    count, whatever the epochs)."""
    cfg = compose_config(["experiment=crcd_resnet32x4_8x4"])
    crcd = _crcd(cfg, 50_000)
    assert crcd.switch_iteration == 187_680 == 240 * 782
    on, off = _terms_at(crcd, 187_679), _terms_at(crcd, 187_680)
    assert on["kd"] > 0 and on["crcd"] > 0
    assert off["kd"] == 0 and off["crcd"] == 0 and off["grad"] > 0  # the gradient element stays, as in the repo


@pytest.mark.parametrize("name, samples, epochs, steps", [
    ("crcd_resnet32x4_8x4", 50_000, 100, 782),         # trainer.epochs=100 on CIFAR-100
    ("crcd_imagenet_r34_r18", 1_281_167, None, 5005),  # ImageNet, 100 epochs, batch 256
])
def test_crcd_switch_is_24_25_of_the_run_whatever_its_epochs(name, samples, epochs, steps):
    cfg = compose_config([f"experiment={name}", *([f"trainer.epochs={epochs}"] if epochs else [])])
    assert cfg.trainer.epochs == 100
    crcd = _crcd(cfg, samples)
    total = 100 * steps
    assert crcd.switch_iteration == total * 24 // 25 == 96 * steps  # the first iteration of epoch 97
    assert _terms_at(crcd, crcd.switch_iteration - 1)["kd"] > 0
    assert _terms_at(crcd, crcd.switch_iteration)["kd"] == 0


def test_crcd_counts_the_trainers_steps_and_switches_off_inside_the_run(tmp_path):
    """Through the trainer: 12 samples in batches of 2, 3 epochs = 18 iterations; ceil(18 * 24/25) = 18, so all
    distil; 30 epochs-worth would not fit a test, so the fraction is lowered to put the switch at iteration 9."""
    root = tmp_path / "data"
    write_fake_cifar100(root, n_train=12, n_test=2, seed=0)
    teacher = tmp_path / "teacher.pth"
    torch.manual_seed(0)
    torch.save({"model": create_model("resnet8", num_classes=100).state_dict()}, teacher)
    overrides = ["experiment=crcd_resnet32x4_8x4", "teacher=resnet8", "student=resnet8", "trainer.epochs=3",
                 f"teacher.checkpoint={teacher}", "distiller.method.num_negatives=4",
                 "distiller.method.distill_fraction=0.5",
                 *tiny_run_overrides(root, tmp_path / "runs"), "dataset.batch_size=2", "dataset.test_batch_size=2"]
    cfg = compose_config(overrides, run_dir=tmp_path / "run")
    trainer = build_trainer(cfg, tmp_path / "run")
    kd = []
    trainer.on_step = lambda step, terms: kd.append(float(terms["kd"]))
    trainer.fit()
    assert trainer.distiller.switch_iteration == 9 and int(trainer.distiller.iteration) == 18
    assert all(v > 0 for v in kd[:9]) and all(v == 0 for v in kd[9:]) and len(kd) == 18


# -------------------------------------------------------------------------- drop_last and the minimum batch
def test_rrd_cells_drop_the_last_partial_batch_as_its_loader():
    """giakoumoglou/rrd @ 45e1cf8 datasets/cifar100.py:47 (83cefda cifar/datasets/cifar100.py:47): drop_last=True."""
    for name in ("rrd_resnet32x4_8x4", "rrd_kd_wrn40_2_16_2"):
        assert compose_config([f"experiment={name}"]).dataset.drop_last is True
    for name in ("crd_resnet32x4_8x4", "kd_resnet32x4_8x4", "crcd_resnet32x4_8x4", "transfer_rrd_stl10"):
        assert compose_config([f"experiment={name}"]).dataset.drop_last is False


def _served(loader, epoch: int = 1) -> list[int]:
    from distillbench.data.sampling import start_epoch

    start_epoch(loader, epoch)
    return [len(batch[1]) for batch in loader]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_drop")
    write_fake_cifar100(root, n_train=21, n_test=4, seed=0)  # 21 = 2 x 10 + 1
    return root


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_drop")
    write_image_folder(root, classes=3, per_class=7, test_per_class=1)  # 21 images
    return root


def _loader_config(kind: str, root, experiment: str, extra=()):
    overrides = [f"experiment={experiment}", f"dataset.root={root}", f"dataset.loader={kind}", "dataset.batch_size=10",
                 "dataset.num_workers=0", "dataset.test_num_workers=0", *extra]
    if kind != "jpeg_device":
        overrides.append("dataset.verify_checksums=false")
    return compose_config(overrides)


@pytest.mark.parametrize("kind", ["torch", "device", "jpeg_device"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_loader_kind_drops_the_last_partial_batch_only_when_asked(kind, drop_last, cifar_root, imagenet_root):
    if kind == "jpeg_device":
        cfg = _loader_config(kind, imagenet_root, "kd_imagenet_r34_r18", [f"dataset.drop_last={drop_last}"])
        with open_dict(cfg):
            cfg.dataset.build.train_transform = {"_target_": "distillbench.data.imagenet.imagenet_train_transform",
                                                 "size": 32}
            cfg.dataset.build.test_transform = {"_target_": "distillbench.data.imagenet.imagenet_test_transform",
                                                "size": 32, "resize": 36}
    else:
        cfg = _loader_config(kind, cifar_root, "kd_resnet32x4_8x4", [f"dataset.drop_last={drop_last}"])
    train_set, test_set = instantiate(cfg.dataset.build)
    assert len(train_set) == 21
    train, _ = build_loaders(cfg, train_set, test_set, CPU, False, DistContext())
    assert len(train) == (2 if drop_last else 3)
    assert _served(train) == ([10, 10] if drop_last else [10, 10, 1])
    assert _served(train, epoch=2) == ([10, 10] if drop_last else [10, 10, 1])


@pytest.mark.parametrize("kind", ["torch", "device"])
def test_a_last_batch_smaller_than_the_methods_minimum_is_dropped_and_logged(kind, cifar_root, caplog):
    """21 samples in batches of 10 leave a batch of 1: RKD (relations of three samples), CC, SP, PKT, CKD and RKD
    combined with KD never see it; KD keeps it."""
    for experiment, minimum in (("rkd_resnet32x4_8x4", 3), ("cc_resnet32x4_8x4", 2), ("sp_resnet32x4_8x4", 2),
                                ("pkt_resnet32x4_8x4", 2), ("ckd_resnet32x4_8x4", 2), ("kd_resnet32x4_8x4", 1)):
        cfg = _loader_config(kind, cifar_root, experiment)
        distiller = instantiate(cfg.distiller.method)
        assert distiller.min_batch_size == minimum
        train_set, test_set = instantiate(cfg.dataset.build)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="distillbench"):
            train, _ = build_loaders(cfg, train_set, test_set, CPU, False, DistContext(), distiller)
        if minimum > 1:
            assert _served(train) == [10, 10], experiment
            assert any("Dropping the last partial training batch" in r.getMessage() and cfg.distiller.name in
                       r.getMessage() for r in caplog.records), experiment
        else:
            assert _served(train) == [10, 10, 1]
            assert not any("Dropping" in r.getMessage() for r in caplog.records)


def test_the_minimum_counts_every_part_of_a_combined_method_and_every_rank():
    assert Combined(kd=KD(), rkd=RKD()).min_batch_size == 3
    assert KD().min_batch_size == 1
    # 21 over 2 ranks of 5: the tail of 1 leaves rank 0 with none.
    assert last_batch_dropped(21, 5, world_size=2, min_batch_size=1)
    assert not last_batch_dropped(23, 5, world_size=2, min_batch_size=1)
    assert last_batch_dropped(23, 5, world_size=2, min_batch_size=2)
    assert last_batch_dropped(20, 10, drop_last=True) and not last_batch_dropped(20, 10, min_batch_size=3)


def test_rkd_with_two_samples_has_no_loss_and_with_one_fails():
    """Why RKD's minimum is three: at two samples the normalised distance is 1 and each angle has one direction."""
    from distillbench.distillers.rkd import rkd_losses

    torch.manual_seed(0)
    distance, angle = rkd_losses(torch.randn(2, 8), torch.randn(2, 8))
    assert abs(distance.item()) < 1e-12 and abs(angle.item()) < 1e-12  # zero but for round-off
    distance, angle = rkd_losses(torch.randn(3, 8), torch.randn(3, 8))
    assert distance.item() > 0 and angle.item() > 0
    with pytest.raises(ValueError):
        rkd_losses(torch.randn(1, 8), torch.randn(1, 8))


def test_methods_with_a_minimum_train_an_epoch_whose_last_batch_would_be_one(cifar_root, tmp_path):
    """An epoch of 21 samples in batches of 10 through the trainer: RKD and CC finish with finite losses."""
    teacher = tmp_path / "teacher.pth"
    torch.manual_seed(0)
    torch.save({"model": create_model("resnet8", num_classes=100).state_dict()}, teacher)
    for method in ("rkd", "cc"):
        cfg = compose_config([f"distiller={method}", "teacher=resnet8", "student=resnet8", "trainer.epochs=1",
                              f"teacher.checkpoint={teacher}", *tiny_run_overrides(cifar_root, tmp_path / method),
                              "dataset.batch_size=10", "dataset.test_batch_size=4"], run_dir=tmp_path / method / "run")
        trainer = build_trainer(cfg, tmp_path / method / "run")
        steps: list[int] = []
        trainer.on_step = lambda step, terms, seen=steps: seen.append(step)
        summary = trainer.fit()
        assert len(steps) == 2 and math.isfinite(summary["acc1_last"])

