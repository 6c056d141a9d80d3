"""Linear-probe transfer: the frozen backbone never changes, only the head trains, and whole runs
through the command line's ``run_job`` on generated STL-10 and Tiny-ImageNet files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from distillbench.errors import ConfigError
from distillbench.jobs import run_job
from distillbench.loggers import read_metrics
from distillbench.models import create_model
from distillbench.models.linear_probe import LinearProbe, build_linear_probe
from distillbench.reporting.runs import record_from_summary
from distillbench.weights import CheckpointError, load_file
from tests.helpers import CONFIG_DIR, compose_config, tiny_run_overrides

TRANSFER_EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("transfer_*.yaml"))


def _backbone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


def _sgd_steps(model: torch.nn.Module, num_classes: int, steps: int = 3) -> None:
    torch.manual_seed(0)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5, momentum=0.9,
                                weight_decay=5e-4)
    for _ in range(steps):
        x, y = torch.randn(8, 3, 32, 32) * 2 + 1, torch.randint(0, num_classes, (8,))
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_only_the_linear_layer_trains_and_bn_statistics_stay():
    probe = LinearProbe(create_model("resnet8", num_classes=100), embedding_dim=64, num_classes=10)
    before = _backbone_state(probe.backbone)
    head_before = probe.fc.weight.detach().clone()

    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    probe.train()
    assert probe.training and probe.fc.training
    assert not any(m.training for m in probe.backbone.modules())
    _sgd_steps(probe, 10)

    _assert_same(before, _backbone_state(probe.backbone))  # weights and BN running mean/var/count
    assert not torch.equal(head_before, probe.fc.weight)
    assert all(p.grad is None for p in probe.backbone.parameters())


def test_without_freeze_bn_the_statistics_move_as_in_rrds_script():
    """The control for the test above: in train mode the same steps do move BN's running statistics."""
    probe = LinearProbe(create_model("resnet8", num_classes=100), embedding_dim=64, num_classes=10, freeze_bn=False)
    before = _backbone_state(probe.backbone)
    _sgd_steps(probe, 10)
    after = _backbone_state(probe.backbone)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all("running" in k or "num_batches" in k for k in moved)


def test_forward_matches_the_zoo_signature():
    backbone = create_model("wrn_16_2", num_classes=100).eval()
    probe = LinearProbe(backbone, embedding_dim=128, num_classes=7, init_std=0.01).eval()
    x = torch.randn(2, 3, 32, 32)
    feats, logits = probe(x, is_feat=True)
    assert logits.shape == (2, 7) and torch.equal(probe(x), logits)
    ref_feats, _ = backbone(x, is_feat=True)
    assert torch.equal(feats[-1], ref_feats[-1])
    torch.testing.assert_close(logits, probe.fc(ref_feats[-1]))
    assert probe.fc.weight.std().item() == pytest.approx(0.01, rel=0.2) and not probe.fc.bias.any()


def test_builder_loads_the_source_network_and_sizes_the_head(tmp_path):
    source = create_model("resnet8", num_classes=100)
    torch.save({"model": source.state_dict(), "epoch": 1}, tmp_path / "model.pth")
    probe = build_linear_probe("resnet8", tmp_path / "model.pth", num_classes=200)
    assert probe.fc.in_features == 64 and probe.fc.out_features == 200
    _assert_same(source.state_dict(), probe.backbone.state_dict())


def test_builder_rejects_a_checkpoint_of_another_network(tmp_path):
    torch.save({"model": create_model("resnet8", num_classes=100).state_dict()}, tmp_path / "r8.pth")
    with pytest.raises(CheckpointError, match="probe.arch and probe.source_num_classes"):
        build_linear_probe("resnet14", tmp_path / "r8.pth", num_classes=10)
    torch.save({"model": create_model("resnet8", num_classes=10).state_dict()}, tmp_path / "r8_10.pth")
    with pytest.raises(CheckpointError, match=r"fc.weight: checkpoint \(10, 64\) vs model \(100, 64\)"):
        build_linear_probe("resnet8", tmp_path / "r8_10.pth", num_classes=10)


def test_missing_checkpoint_says_which_experiment_makes_it(tmp_path):
    runs = tmp_path / "runs"
    cfg = compose_config(["experiment=transfer_crd_stl10", f"paths.runs={runs}", "trainer.device=cpu",
                          "logger.wandb.mode=disabled", f"dataset.root={tmp_path / 'nowhere'}"], run_dir=tmp_path / "p")
    with pytest.raises(ConfigError) as info:
        run_job(cfg, tmp_path / "p")
    message = str(info.value)
    assert str(runs / "crd_wrn40_2_16_2" / "default" / "seed0" / "model.pth") in message
    assert "experiment=crd_wrn40_2_16_2" in message and "probe.checkpoint=" in message


def test_every_transfer_experiment_freezes_the_output_of_an_existing_cifar_experiment(tmp_path):
    assert len(TRANSFER_EXPERIMENTS) == 18
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for name in TRANSFER_EXPERIMENTS:
            cfg = compose(config_name="config", overrides=[f"experiment={name}", "paths.runs=R"])
            probe = OmegaConf.to_container(cfg.probe, resolve=True)
            assert cfg.role == "probe" and cfg.name == name and cfg.published.acc1 > 0, name
            assert cfg.trainer.epochs == 120 and list(cfg.sched.milestones) == [30, 60, 90], name
            assert cfg.optim.lr == 0.05 and cfg.dataset.batch_size == 64 and cfg.dataset.test_batch_size == 32
            assert probe["table"] in ("cifar100_to_stl10", "cifar100_to_tinyimagenet"), name
            source = compose(config_name="config", overrides=[f"experiment={probe['source_experiment']}",
                                                              "paths.runs=R"])
            if probe["method"] == "vanilla_teacher":
                assert source.role == "teacher" and probe["checkpoint"] == cfg.teacher.checkpoint
                assert probe["arch"] == source.teacher.arch == "wrn_40_2"
                continue
            assert probe["checkpoint"] == f"R/{source.name}/default/seed0/model.pth", name
            assert source.role == "student" and probe["arch"] == source.student.arch == "wrn_16_2", name
            assert source.teacher.arch == "wrn_40_2" or probe["method"] == "vanilla_student"
            assert source.distiller.name == ("none" if probe["method"] == "vanilla_student" else probe["method"])


# ----------------------------------------------------------------- end to end


def _write_stl10(root, n_train: int, n_test: int) -> None:
    """STL-10's binary layout: uint8 planes stored column by column, labels 1..10."""
    rng = np.random.default_rng(1)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())
        (folder / f"{split}_y.bin").write_bytes((rng.integers(0, 10, size=n) + 1).astype(np.uint8).tobytes())


def _write_tiny_imagenet(root, wnids=("n01443537", "n02124075"), per_class: int = 4) -> None:
    rng = np.random.default_rng(0)
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for c, wnid in enumerate(wnids):
        (folder / "train" / wnid / "images").mkdir(parents=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
            image.save(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
            image.save(folder / "val" / "images" / f"val_{c}_{i}.JPEG")
            lines.append(f"val_{c}_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def _probe_overrides(root, runs) -> list[str]:
    """tiny_run_overrides without the CIFAR-only checksum switch."""
    return [o for o in tiny_run_overrides(root, runs) if not o.startswith("dataset.verify_checksums")]


@pytest.fixture(scope="module")
def cifar_runs(fake_cifar_root, tmp_path_factory):
    """A 1-epoch resnet8 'vanilla_wrn16_2' run, in the run directory the transfer experiments point at."""
    runs = tmp_path_factory.mktemp("runs")
    run_dir = runs / "vanilla_wrn16_2" / "default" / "seed0"
    cfg = compose_config(["experiment=vanilla_wrn16_2", "student=resnet8", "trainer.epochs=1",
                          *tiny_run_overrides(fake_cifar_root, runs)], run_dir=run_dir)
    run_job(cfg, run_dir)
    return runs


def _check_probe_run(run_dir, source: dict, epochs: int, num_classes: int) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["job_type"] == "probe" and summary["arch"] == "resnet8"
    assert isinstance(summary["acc1_last"], float) and 0.0 <= summary["acc1_last"] <= 100.0
    assert not math.isnan(summary["acc1_best"])
    assert [m["epoch"] for m in read_metrics(run_dir)] == list(range(1, epochs + 1))
    assert read_metrics(run_dir)[0]["lr"] == 0.05
    exported = load_file(run_dir / "model.pth")["model"]
    backbone = {k.removeprefix("backbone."): v for k, v in exported.items() if k.startswith("backbone.")}
    # The reference probe (RRD's transfer_student.py, model.train()): the weights stay bit-identical, the BN
    # running statistics move to the target set (probe.freeze_bn=true keeps them; tested above).
    running = [k for k in source if "running_" in k or k.endswith("num_batches_tracked")]
    _assert_same({k: v for k, v in source.items() if k not in running},
                 {k: v for k, v in backbone.items() if k not in running})
    assert running and all(not torch.equal(source[k], backbone[k]) for k in running if k.endswith("running_mean"))
    assert exported["fc.weight"].shape == (num_classes, 64)
    return summary


def test_probe_on_stl10_through_the_cli(cifar_runs, tmp_path):
    root = tmp_path / "data"
    _write_stl10(root, n_train=48, n_test=24)
    run_dir = cifar_runs / "transfer_vanilla_student_stl10" / "seed0"
    cfg = compose_config(["experiment=transfer_vanilla_student_stl10", "student=resnet8", "trainer.epochs=2",
                          *_probe_overrides(root, cifar_runs)], run_dir=run_dir)
    run_job(cfg, run_dir)
    source = load_file(cifar_runs / "vanilla_wrn16_2" / "default" / "seed0" / "model.pth")["model"]
    summary = _check_probe_run(run_dir, source, epochs=2, num_classes=10)

    assert summary["method"] == "vanilla_student" and summary["probe_dataset"] == "stl10"
    assert summary["published_acc1"] == 69.7
    record = record_from_summary(summary, str(run_dir))  # lands in the transfer table's vanilla-student row
    assert (record.dataset, record.method, record.teacher, record.student) == (
        "cifar100_to_stl10", "vanilla_student", "wrn_40_2", "resnet8")


def test_probe_on_tiny_imagenet_through_the_cli(cifar_runs, tmp_path):
    root = tmp_path / "data"
    _write_tiny_imagenet(root)
    checkpoint = cifar_runs / "vanilla_wrn16_2" / "default" / "seed0" / "model.pth"
    run_dir = tmp_path / "probe"
    cfg = compose_config(["experiment=transfer_kd_tiny_imagenet", "student=resnet8", "trainer.epochs=1",
                          f"probe.checkpoint={checkpoint}", *_probe_overrides(root, tmp_path / "runs")],
                         run_dir=run_dir)
    run_job(cfg, run_dir)
    summary = _check_probe_run(run_dir, load_file(checkpoint)["model"], epochs=1, num_classes=200)
    assert summary["method"] == "kd" and summary["dataset"] == "cifar100_to_tinyimagenet"
    assert "teacher_acc1" not in summary  # no teacher is built for a probe
