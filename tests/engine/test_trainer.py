"""Trainer behaviour on a tiny in-memory dataset: divergence, teacher checks, the distiller contract."""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pytest
import torch

import distillbench.engine.networks as networks_module
from distillbench.data.instance import InstanceDataset
from distillbench.data.loaders import make_loaders
from distillbench.data.transforms import test_transform
from distillbench.distillers import KD, Distiller
from distillbench.engine.checkpoint import load_training_checkpoint
from distillbench.engine.trainer import DivergenceError, Trainer
from distillbench.errors import ConfigError
from distillbench.loggers import FileLogger, LoggerGroup, RunInfo, read_metrics
from distillbench.models import create_model
from tests.helpers import KillAt


def tiny_loaders(n: int = 48, num_classes: int = 4):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n) % num_classes
    dataset = InstanceDataset(images, labels, transform=test_transform(), num_classes=num_classes)
    return make_loaders(dataset, dataset, batch_size=16, test_batch_size=48)


def make_trainer(tmp_path, **kwargs) -> Trainer:
    train_loader, test_loader = tiny_loaders()
    defaults = dict(
        model=create_model("resnet8", num_classes=4),
        train_loader=train_loader,
        test_loader=test_loader,
        make_optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        make_scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[1]),
        epochs=2,
        run_dir=tmp_path,
        logger=LoggerGroup([]),
        info=RunInfo(name="t", job_type="student", run_dir=str(tmp_path), seed=0),
        progress=False,
        check_finite_every=1,
    )
    defaults.update(kwargs)
    return Trainer(**defaults)


class NaNInEpochTwo(Distiller):
    """Returns a finite term in epoch 1 and NaN from the third step of epoch 2 on."""

    def setup(self, student, teacher, train_labels):
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.steps = 0
        self.labels_seen = train_labels.clone()

    def forward(self, student, teacher, batch, epoch):
        self.steps += 1
        value = self.scale * student.logits.float().pow(2).mean() * 1e-3
        if epoch == 2 and self.steps >= 5:
            value = value * float("nan")
        return {"blowup": value}


def test_nan_stops_with_term_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, teacher=create_model("resnet8", num_classes=4), distiller=NaNInEpochTwo())
    with pytest.raises(DivergenceError) as err:
        trainer.fit()
    message = str(err.value)
    assert "'blowup'" in message and "epoch 2, step 2" in message and "trainer.detect_anomaly=true" in message
    assert load_training_checkpoint(tmp_path / "checkpoints")["epoch"] == 1


def test_distiller_is_set_up_from_the_real_networks_and_trained(tmp_path):
    distiller = NaNInEpochTwo()
    trainer = make_trainer(tmp_path, epochs=1, teacher=create_model("resnet8", num_classes=4), distiller=distiller)
    trainer.fit()
    assert torch.equal(distiller.labels_seen, torch.arange(48) % 4)
    # Its parameter was in the optimiser: weight decay-free SGD moved it away from 1.
    assert distiller.scale.item() != 1.0


def test_teacher_is_frozen_evaluated_and_warned_about(tmp_path, caplog):
    teacher = create_model("resnet8", num_classes=4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = make_trainer(tmp_path, epochs=1, teacher=teacher, distiller=KD(), expected_teacher_acc1=99.0)
    with caplog.at_level(logging.WARNING, logger="distillbench"):
        summary = trainer.fit()
    assert "far below the 99.00%" in caplog.text
    assert summary["teacher_acc1"] == pytest.approx(trainer.teacher_acc1)
    assert not teacher.training
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key  # eval mode: not even BN statistics move


def test_scheduler_follows_epochs(tmp_path):
    trainer = make_trainer(tmp_path, logger=LoggerGroup([FileLogger()]))
    trainer.fit()
    assert [m["lr"] for m in read_metrics(tmp_path)] == pytest.approx([0.05, 0.005])


def test_distiller_without_teacher_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs a teacher"):
        make_trainer(tmp_path, distiller=KD())


class RefusesThePair(Distiller):
    def setup(self, student, teacher, train_labels):
        raise ConfigError("this pair cannot work")


def test_an_incompatible_pair_fails_before_the_teacher_is_evaluated(tmp_path, monkeypatch):
    evaluated = []
    monkeypatch.setattr(networks_module, "evaluate", lambda *a, **k: evaluated.append(1) or {"acc1": 0.0})
    trainer = make_trainer(tmp_path, teacher=create_model("resnet8", num_classes=4), distiller=RefusesThePair())
    with pytest.raises(ConfigError, match="cannot work"):
        trainer.fit()
    assert evaluated == []
    assert not (tmp_path / "checkpoints").exists()


def test_anomaly_detection_names_the_operation(tmp_path):
    trainer = make_trainer(tmp_path, teacher=create_model("resnet8", num_classes=4), distiller=NaNInEpochTwo(),
                           detect_anomaly=True)
    with pytest.raises(RuntimeError, match="returned nan values"):
        trainer.fit()


class TwoStage(Distiller):
    """A two-stage method in miniature: the init stage pulls the student's pooled feature toward the
    teacher's through the student's feature stages; the main stage adds nothing."""

    init_epochs = 2

    def setup(self, student, teacher, train_labels):
        self.ended = 0

    def init_modules(self, student):
        return student.get_feat_modules()

    def init_lr(self, base_lr):
        return base_lr / 5

    def init_loss(self, student, teacher, batch):
        return {"pull": (student.pooled - teacher.pooled).pow(2).mean()}

    def end_init_stage(self):
        self.ended += 1

    def forward(self, student, teacher, batch, epoch):
        return {"zero": student.logits.sum() * 0.0}


def test_init_stage_trains_only_its_modules_then_hands_over(tmp_path):
    model = create_model("resnet8", num_classes=4)
    fc_before = model.fc.weight.detach().clone()
    stem_before = model.conv1.weight.detach().clone()
    distiller = TwoStage()
    trainer = make_trainer(tmp_path, model=model, epochs=0, teacher=create_model("resnet8", num_classes=4),
                           distiller=distiller, logger=LoggerGroup([FileLogger()]))
    trainer.fit()
    init_metrics = read_metrics(tmp_path, "init_metrics.jsonl")
    assert [m["init/epoch"] for m in init_metrics] == [1, 2]
    assert init_metrics[1]["init/loss_pull"] < init_metrics[0]["init/loss_pull"]
    assert torch.equal(model.fc.weight, fc_before)  # the classifier is not an init module
    assert not torch.equal(model.conv1.weight, stem_before)
    assert distiller.ended == 1


class DivergingInitStage(TwoStage):
    def init_loss(self, student, teacher, batch):
        return {"pull": (student.pooled - teacher.pooled).pow(2).mean() * float("nan")}


def test_a_nan_in_the_init_stage_is_a_divergence_error_naming_the_term(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1, teacher=create_model("resnet8", num_classes=4),
                           distiller=DivergingInitStage())
    with pytest.raises(DivergenceError, match=r"init/loss_pull became NaN or Inf in init epoch 1"):
        trainer.fit()


def test_resume_inside_the_init_stage_equals_an_uninterrupted_run(tmp_path):
    def run(run_dir, **kwargs):
        torch.manual_seed(0)
        model = create_model("resnet8", num_classes=4)
        teacher = create_model("resnet8", num_classes=4)
        trainer = make_trainer(run_dir, model=model, epochs=1, teacher=teacher, distiller=TwoStage(),
                               logger=LoggerGroup([FileLogger()]), **kwargs)
        return trainer.fit(), model

    straight, straight_model = run(tmp_path / "a")

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", callbacks=[KillAt("on_init_epoch_start", 2)])
    resumed, resumed_model = run(tmp_path / "b", resume=True)

    assert resumed["acc1_last"] == straight["acc1_last"]

    def losses(run_dir):
        records = read_metrics(run_dir, "init_metrics.jsonl")
        return [{k: v for k, v in m.items() if k != "init/epoch_s"} for m in records]

    assert losses(tmp_path / "b") == losses(tmp_path / "a")
    for key, value in straight_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key


class NeedsTeacherGradient(Distiller):
    """Reads d CE(teacher) / d teacher pooled feature, as CRCD's gradient element does."""

    teacher_train_mode = True
    teacher_grad = True

    def setup(self, student, teacher, train_labels):
        self.modes = []

    def forward(self, student, teacher, batch, epoch):
        ce_teacher = torch.nn.functional.cross_entropy(teacher.logits, batch.labels)
        (grad_t,) = torch.autograd.grad(ce_teacher, teacher.pooled, create_graph=True)
        self.modes.append(grad_t.requires_grad)
        return {"align": (student.pooled * grad_t.detach()).sum() * 0.0 + student.logits.mean() * 0.0}


def test_a_method_can_run_the_teacher_in_train_mode_with_gradients(tmp_path):
    teacher = create_model("resnet8", num_classes=4)
    running_mean = teacher.bn1.running_mean.clone()
    weights = teacher.conv1.weight.detach().clone()
    distiller = NeedsTeacherGradient()
    trainer = make_trainer(tmp_path, epochs=1, teacher=teacher, distiller=distiller)
    trainer.fit()
    assert distiller.modes and all(distiller.modes)
    assert teacher.training
    assert not torch.equal(teacher.bn1.running_mean, running_mean)  # batch statistics moved it
    assert torch.equal(teacher.conv1.weight, weights)  # but the teacher was never optimised
    assert all(p.grad is None for p in teacher.parameters())
    state = load_training_checkpoint(tmp_path / "checkpoints")
    assert torch.equal(state["teacher"]["bn1.running_mean"], teacher.bn1.running_mean)
