"""One loop for every job: training a teacher, a vanilla student, or a distilled student.

The loss is ``ce_weight * CE + sum(distiller terms)``; the trainer knows no method by name.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from distillbench.data.sampling import start_epoch
from distillbench.distillers.base import Batch, Distiller
from distillbench.engine import distributed
from distillbench.engine.checkpoint import (
    CHECKPOINT_DIR,
    NonFiniteStateError,
    load_training_checkpoint,
    save_atomic,
    save_training_checkpoint,
)
from distillbench.engine.evaluation import evaluate
from distillbench.engine.init_stage import InitStage, make_init_optimizer
from distillbench.engine.metrics import EpochMeter, correct_topk
from distillbench.engine.preemption import StopRequests
from distillbench.engine.seeding import capture_rng_state, epoch_seed, restore_rng_state, seed_everything
from distillbench.engine.speed import SpeedOptions
from distillbench.engine.teacher_cache import TeacherCache, teacher_cache_for
from distillbench.errors import DivergenceError
from distillbench.loggers.base import RunInfo, RunLogger
from distillbench.models.outputs import ModelOutput, forward_features, frozen_forward, probe_shapes

if TYPE_CHECKING:  # the lock comes from the command line's run-directory claim; the trainer only releases it
    from distillbench.rundir import RunLock

log = logging.getLogger("distillbench")

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

EXPORT_FILE = "model.pth"
# The weights of the best test top-1 so far, same format; written before the epoch's checkpoint, so a resumed
# run finds the file of its checkpoint's best_epoch on disk.
BEST_FILE = "model_best.pth"


class Trainer:
    """Trains ``model`` on ``train_loader``, optionally distilled from a frozen ``teacher``.

    Per epoch it records the lr, every loss term, train top-1, test top-1/top-5, the epoch
    time and the throughput; per run ``acc1_last``, ``acc1_best`` and ``best_epoch``. After
    each epoch it writes a checkpoint holding everything resuming needs. ``on_step(step, terms)``
    sees every step's loss terms as device tensors (loss trajectories, benchmarks).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        train_loader: DataLoader,
        test_loader: DataLoader,
        make_optimizer: OptimizerFactory,
        make_scheduler: SchedulerFactory,
        epochs: int,
        run_dir: str | Path,
        logger: RunLogger,
        info: RunInfo,
        device: str | torch.device = "cpu",
        teacher: nn.Module | None = None,
        distiller: Distiller | None = None,
        ce_weight: float = 1.0,
        seed: int = 0,
        resume: bool = False,
        expected_teacher_acc1: float | None = None,
        teacher_acc1_tolerance: float = 3.0,
        check_finite_every: int = 50,
        checkpoint_every_steps: int = 0,
        detect_anomaly: bool = False,
        progress: bool = True,
        speed: SpeedOptions | None = None,
        teacher_cache_dir: str | Path | None = None,
        teacher_cache_optional: bool = False,
        on_step: Callable[[int, dict[str, Tensor]], None] | None = None,
        sync_bn: bool = False,
        run_lock: RunLock | None = None,
    ):
        if distiller is not None and teacher is None:
            raise ValueError("A distiller needs a teacher; set distiller=none to train without one.")
        self.model = model
        self.train_loader = train_loader
        self.test_loader = test_loader
        self.make_optimizer = make_optimizer
        self.make_scheduler = make_scheduler
        self.epochs = epochs
        self.run_dir = Path(run_dir)
        self.logger = logger
        self.info = info
        self.device = torch.device(device)
        self.teacher = teacher
        self.distiller = distiller
        self.ce_weight = ce_weight
        self.seed = seed
        self.resume = resume
        self.expected_teacher_acc1 = expected_teacher_acc1
        self.teacher_acc1_tolerance = teacher_acc1_tolerance
        self.check_finite_every = max(1, check_finite_every)
        self.checkpoint_every_steps = checkpoint_every_steps
        self.stop = StopRequests()
        self.detect_anomaly = detect_anomaly
        self.progress = progress
        self.speed = speed or SpeedOptions()
        self.teacher_cache_dir = teacher_cache_dir
        self.teacher_cache_optional = teacher_cache_optional
        self.teacher_cache: TeacherCache | None = None
        self.on_step = on_step
        self.sync_bn = sync_bn
        self.run_lock = run_lock  # held from the run-directory checks to the end of the run
        self.is_main = distributed.rank() == 0
        self.checkpoint_dir = self.run_dir / CHECKPOINT_DIR
        self.teacher_acc1: float | None = None
        self.best_acc1 = -math.inf
        self.best_epoch = 0
        self.last_test: dict[str, float] = {}

    # ------------------------------------------------------------------ setup
    def _freeze_teacher(self) -> None:
        self.teacher.to(self.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def _prepare_networks(self) -> None:
        """Memory format, DDP and compilation; the plain modules keep the weights and the checkpoints.

        On several ranks DDP wraps the student only (its gradients are averaged during backward,
        rank 0's BN buffers broadcast each forward); the frozen teacher stays plain, and the
        distiller's extras average their gradients after backward (``distributed.average_gradients``).
        """
        self.speed.prepare_model(self.model)
        student = self.model
        if distributed.is_distributed():
            from torch.nn.parallel import DistributedDataParallel

            if self.sync_bn:
                nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            student = DistributedDataParallel(self.model, device_ids=None)
        self.student_fn = self.speed.compiled(student)
        if self.teacher is not None:
            self.speed.prepare_model(self.teacher)
            self.teacher_fn = self.speed.compiled(self.teacher)

    def _load_teacher_cache(self) -> None:
        """Teacher outputs per (image, view), for a method that reads only logits and the pooled embedding."""
        self.teacher_cache = teacher_cache_for(self.teacher, self.distiller, self.train_loader,
                                               self.teacher_cache_dir, optional=self.teacher_cache_optional)

    def _evaluate_teacher(self) -> None:
        self.teacher_acc1 = evaluate(self.teacher, self.test_loader, self.device)["acc1"]
        log.info("teacher test top-1: %.2f", self.teacher_acc1)
        expected = self.expected_teacher_acc1
        if expected is not None and self.teacher_acc1 < expected - self.teacher_acc1_tolerance:
            log.warning(
                "The teacher reaches %.2f%% top-1, far below the %.2f%% its config expects. Is teacher.checkpoint "
                "the right file for this architecture and dataset?", self.teacher_acc1, expected,
            )

    def _setup_distiller(self) -> None:
        sample = self.train_loader.dataset[0][0]
        shape = (2, *sample.shape)
        self.distiller.to(self.device)
        student_probe = probe_shapes(self.model, shape, preact=self.distiller.preact)
        teacher_probe = probe_shapes(self.teacher, shape, preact=self.distiller.preact)
        labels = torch.as_tensor(self.train_loader.dataset.targets, dtype=torch.long)
        self.distiller.setup(student_probe, teacher_probe, labels)
        self.distiller.to(self.device)
        if self.distiller.teacher_grad:
            for p in self.teacher.parameters():
                p.requires_grad_(True)

    def _trainable_parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.distiller is not None:
            params += [p for p in self.distiller.parameters() if p.requires_grad]
        return params

    # ------------------------------------------------------------ checkpoints
    def _teacher_moves(self) -> bool:
        return self.distiller is not None and self.distiller.teacher_train_mode

    def _common_state(self) -> dict:
        return {
            **({"teacher": self.teacher.state_dict()} if self._teacher_moves() else {}),
            "model": self.model.state_dict(),
            "distiller": self.distiller.state_dict() if self.distiller is not None else {},
            "rng": capture_rng_state(),
            "logger": self.logger.state_dict(),
            "seed": self.seed,
            "identity": self.info.identity,
            "config": self.info.config,
        }

    def _init_state(self, init_epoch: int, optimizer: torch.optim.Optimizer) -> dict:
        """A checkpoint inside the init stage of a two-stage method."""
        return {**self._common_state(), "epoch": 0, "step": 0, "init_epoch": init_epoch,
                "init_optimizer": optimizer.state_dict()}

    def _state(self, epoch: int, step: int = 0, meter: EpochMeter | None = None) -> dict:
        """``epoch`` epochs are complete, and ``step`` steps of the next one (with their meter)."""
        return {
            **self._common_state(),
            "epoch": epoch,
            "step": step,
            "init_epoch": self._init_epochs(),
            "meter": meter.state_dict() if meter is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_acc1": self.best_acc1,
            "best_epoch": self.best_epoch,
            "last_test": self.last_test,
        }

    def _restore_common(self, state: dict) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(
                f"The checkpoint in {self.checkpoint_dir} was made with seed {state.get('seed')}, this run uses "
                f"seed {self.seed}; resume with the same seed or use another run directory."
            )
        self.model.load_state_dict(state["model"])
        if self._teacher_moves():
            self.teacher.load_state_dict(state["teacher"])
        if self.distiller is not None:
            self.distiller.load_state_dict(state["distiller"])
        restore_rng_state(state["rng"])

    def _restore_main(self, state: dict) -> tuple[int, int, dict | None]:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best_acc1 = state["best_acc1"]
        self.best_epoch = state["best_epoch"]
        self.last_test = state["last_test"]
        log.info("resumed from %s after epoch %d, step %d", self.checkpoint_dir, state["epoch"], state["step"])
        return state["epoch"], state["step"], state["meter"]

    def _save(self, state: dict) -> None:
        """Rank 0 writes; every rank holds the same state (same weights, same memories).

        A state with a NaN or Inf anywhere (weights, BN statistics, optimiser or distiller state) is
        never written: the run stops and the last good checkpoint stays the one to resume from."""
        if not self.is_main:
            return
        try:
            save_training_checkpoint(state, self.checkpoint_dir)
        except NonFiniteStateError as err:
            where = (f"init epoch {state['init_epoch']}" if "init_optimizer" in state
                     else f"epoch {state['epoch']}" + (f", step {state['step']}" if state.get("step") else ""))
            raise DivergenceError(
                f"Training diverged: after {where}, {err}. That state was not saved; the last good checkpoint "
                f"stays in {self.checkpoint_dir} (epoch {self._last_good_epoch}). Lower the learning rate or the "
                "weight of the loss term that grows, or rerun with trainer.detect_anomaly=true to find the "
                "operation that produced it."
            ) from None
        self._last_good_epoch = state["epoch"]

    def _export(self, name: str, acc1: float, epoch: int) -> None:
        """The model's weights as ``{'model': state_dict, 'acc1', 'epoch', 'arch'}`` in ``run_dir/name`` (rank 0)."""
        if self.is_main:
            save_atomic({"model": self.model.state_dict(), "acc1": acc1, "epoch": epoch,
                         "arch": self.info.tags.get("arch")}, self.run_dir / name)

    def _init_epochs(self) -> int:
        return self.distiller.init_epochs if self.distiller is not None else 0

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        """Train to the end; returns the summary."""
        with self.stop:
            steps = self.steps()
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    return done.value

    def steps(self) -> Generator[None, None, dict]:
        """The run as a generator that yields after every training step and returns the summary.

        ``fit`` drains it; ``side_by_side.fit_side_by_side`` interleaves several runs' steps in one
        process. Stop signals are recorded by ``self.stop``, which the caller enters.
        """
        try:
            return (yield from self._steps())
        finally:
            if self.run_lock is not None:  # the run directory is free for the next writer
                self.run_lock.release()

    def _steps(self) -> Generator[None, None, dict]:
        seed_everything(self.seed)
        self.model.to(self.device)
        if self.teacher is not None:
            self._freeze_teacher()
        if self.distiller is not None:
            self._setup_distiller()  # first: an incompatible pair fails before any long work
        if self.teacher is not None:
            self._evaluate_teacher()
        if self.teacher_cache_dir is not None and self.distiller is not None:
            self._load_teacher_cache()
        self._prepare_networks()

        state = load_training_checkpoint(self.checkpoint_dir, self.info.identity) if self.resume else None
        self._last_good_epoch = state["epoch"] if state is not None else 0
        if self.resume and state is None:
            log.info("resume=true, but %s holds no checkpoint: starting from scratch.", self.checkpoint_dir)
        if state is not None:
            self._restore_common(state)
        self.logger.start(self.info, state["logger"] if state is not None else None)
        success = False
        try:
            with torch.autograd.set_detect_anomaly(self.detect_anomaly):
                if self._init_epochs():
                    self._run_init_stage(state)
                if self.epochs == 0:  # an evaluation (role=eval): the network as it was loaded, no optimiser
                    self.last_test = evaluate(self.model, self.test_loader, self.device)
                    self.best_acc1, self.best_epoch = self.last_test["acc1"], 0
                else:
                    yield from self._train(state)
            summary = self._summary()
            if self.epochs:  # first: summary.json marks the end. An evaluation changed no weight.
                self._export(EXPORT_FILE, summary["acc1_last"], self.epochs)
            self.logger.log_summary(summary)
            success = True
            return summary
        finally:
            self.logger.finish(success)

    def _train(self, state: dict | None) -> Generator[None]:
        """The main stage: a fresh optimiser and schedule (or the checkpoint's), then the remaining epochs."""
        self.optimizer = self.make_optimizer(self._trainable_parameters())
        self.scheduler = self.make_scheduler(self.optimizer)
        in_main_stage = state is not None and "optimizer" in state
        start_epoch, start_step, meter_state = self._restore_main(state) if in_main_stage else (0, 0, None)
        for epoch in range(start_epoch + 1, self.epochs + 1):
            yield from self._run_epoch(epoch, start_step, meter_state)
            start_step, meter_state = 0, None

    def _run_init_stage(self, state: dict | None) -> None:
        """Two-stage methods: train the distiller's init modules, checkpointing each init epoch.

        A run interrupted inside the init stage resumes at the start of the unfinished init epoch.
        """
        done = state["init_epoch"] if state is not None else 0
        total = self._init_epochs()
        if done < total:
            modules = self.distiller.init_modules(self.model)
            optimizer = make_init_optimizer(self.make_optimizer, modules, self.distiller.init_lr)
            if state is not None and "init_optimizer" in state:
                optimizer.load_state_dict(state["init_optimizer"])
            stage = InitStage(model=self.model, teacher=self.teacher, distiller=self.distiller,
                              loader=self.train_loader, device=self.device, optimizer=optimizer, seed=self.seed,
                              progress=self.progress)
            for init_epoch in range(done + 1, total + 1):
                metrics = stage.run_epoch(init_epoch)
                self.logger.log_init_epoch(metrics)
                self._save(self._init_state(init_epoch, optimizer))
                self.stop.raise_if_requested(f"after init epoch {init_epoch}", self.checkpoint_dir)
        self.distiller.end_init_stage()

    def _run_epoch(self, epoch: int, start_step: int = 0, meter_state: dict | None = None) -> Generator[None]:
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        train = yield from self._train_one_epoch(epoch, start_step, meter_state)
        train_seconds = time.perf_counter() - start
        distributed.broadcast_buffers(self.model)
        test = evaluate(self.model, self.test_loader, self.device)
        self.scheduler.step()
        self.last_test = test
        if test["acc1"] > self.best_acc1:
            self.best_acc1, self.best_epoch = test["acc1"], epoch
            self._export(BEST_FILE, test["acc1"], epoch)
        metrics = {
            "epoch": epoch,
            "lr": lr,
            **{f"train/{k}": v for k, v in train.items()},
            "test/acc1": test["acc1"],
            "test/acc5": test["acc5"],
            "test/loss": test["loss"],
            "time/epoch_s": time.perf_counter() - start,
            "time/images_per_s": len(self.train_loader.dataset) / max(train_seconds, 1e-9),
        }
        if self.teacher_acc1 is not None:
            metrics["teacher/acc1"] = self.teacher_acc1
        self.logger.log_epoch(metrics)
        self.stop.agree(self.device)
        self._save(self._state(epoch))
        self.stop.raise_if_requested(f"after epoch {epoch}", self.checkpoint_dir)

    def _teacher_outputs(self, batch: Batch) -> ModelOutput:
        preact = self.distiller.preact
        if self.teacher_cache is not None:
            return self.teacher_cache.lookup(batch.index, batch.view)
        if self.distiller.teacher_grad:
            return forward_features(self.teacher_fn, batch.images, preact=preact)
        return frozen_forward(self.teacher_fn, batch.images, preact=preact)

    def _losses(self, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy and the distiller's terms; under bf16 autocast only the student and the distiller run."""
        if self.distiller is None:
            with self.speed.autocast(self.device):
                logits = self.student_fn(batch.images)
            return logits, {"ce": self.ce_weight * F.cross_entropy(logits.float(), batch.labels)}
        teacher_out = self._teacher_outputs(batch)
        with self.speed.autocast(self.device):
            student_out = forward_features(self.student_fn, batch.images, preact=self.distiller.preact)
            distilled = self.distiller(student_out, teacher_out, batch, epoch)
        terms = {"ce": self.ce_weight * F.cross_entropy(student_out.logits.float(), batch.labels)}
        for name, value in distilled.items():
            if name in terms:
                raise ValueError(f"The distiller returned a loss term named '{name}', which is reserved.")
            terms[name] = value.float()
        return student_out.logits, terms

    def _train_one_epoch(self, epoch: int, start_step: int = 0,
                         meter_state: dict | None = None) -> Generator[None, None, dict[str, float]]:
        if start_step == 0:
            torch.manual_seed(epoch_seed(self.seed, epoch))
        start_epoch(self.train_loader, epoch, start_step * self.train_loader.batch_size * distributed.world_size())
        self.model.train()
        if self.distiller is not None:
            self.distiller.train()
            self.teacher.train(self.distiller.teacher_train_mode)
        meter = EpochMeter(self.device)
        if meter_state is not None and self.is_main:  # the saved sums are all ranks' already
            meter.load_state_dict(meter_state)
        steps = start_step + len(self.train_loader)
        first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}/{self.epochs}", leave=False, disable=not self.progress,
                   dynamic_ncols=True, initial=start_step, total=steps)
        for step, (images, labels, index, *view) in enumerate(bar, start=start_step + 1):
            batch = Batch(
                self.speed.prepare_images(images.to(self.device, non_blocking=True)),
                labels.to(self.device, non_blocking=True),
                index.to(self.device, non_blocking=True),
                view[0].to(self.device, non_blocking=True) if view else None,
            )
            logits, terms = self._losses(batch, epoch)
            loss = torch.stack([t.float() for t in terms.values()]).sum()
            # One backward of the sum, then a step; an optimiser with loss_steps (optim.LossSplittingOptimizer,
            # e.g. DOT) takes CE and the distiller's terms apart, each backward followed by its own step.
            parts = [(loss, self.optimizer.step)]
            if hasattr(self.optimizer, "loss_steps") and len(terms) > 1:
                distill = torch.stack([t.float() for name, t in terms.items() if name != "ce"]).sum()
                parts = self.optimizer.loss_steps(terms["ce"], distill)
            for i, (part, optimizer_step) in enumerate(parts, start=1):
                self.optimizer.zero_grad(set_to_none=True)
                part.backward(retain_graph=i < len(parts))
                if self.distiller is not None:
                    distributed.average_gradients(self.distiller.parameters())
                optimizer_step()
            if self.distiller is not None and self.distiller.teacher_grad:
                self.teacher.zero_grad(set_to_none=True)

            if self.on_step is not None:
                self.on_step(step, {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}})
            n = len(batch.labels)
            meter.add({"loss": loss, **{f"loss_{k}": v for k, v in terms.items()}}, n)
            meter.add_counts({"acc1": correct_topk(logits.detach(), batch.labels, (1,))[0] * 100.0})
            bad = ~torch.isfinite(loss)
            first_bad_step = torch.where(bad & (first_bad_step < 0), step, first_bad_step)
            if step % self.check_finite_every == 0:
                self._raise_if_diverged(first_bad_step, meter, epoch)
                self.stop.agree(self.device)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            periodic = self.checkpoint_every_steps > 0 and step % self.checkpoint_every_steps == 0
            if step < steps and (periodic or self.stop.requested):
                self._raise_if_diverged(first_bad_step, meter, epoch)
                self._save(self._state(epoch - 1, step, meter))
                self.stop.raise_if_requested(f"at step {step} of epoch {epoch}", self.checkpoint_dir)
            yield
        self._raise_if_diverged(first_bad_step, meter, epoch)
        return meter.averages()

    def _raise_if_diverged(self, first_bad_step: Tensor, meter: EpochMeter, epoch: int) -> None:
        if distributed.is_distributed():  # the first bad step of any rank, on every rank
            never = torch.iinfo(torch.long).max
            first = distributed.all_reduce_min(torch.where(first_bad_step < 0, never, first_bad_step))
            first_bad_step = torch.where(first == never, -1, first)
        step = int(first_bad_step)
        if step < 0:
            return
        bad_terms = [k.removeprefix("loss_") for k, v in meter.sums.items()
                     if k.startswith("loss_") and not torch.isfinite(v)]
        raise DivergenceError(
            f"Loss term(s) {', '.join(repr(t) for t in bad_terms) or 'total'} became NaN or Inf at epoch {epoch}, "
            f"step {step}. Training stopped; the last good checkpoint (after epoch {epoch - 1}) is kept in "
            f"{self.checkpoint_dir}. Lower the learning rate or the term's weight, or rerun with "
            "trainer.detect_anomaly=true to find the operation that produced it."
        )

    def _summary(self) -> dict:
        summary = {
            "finished": True,
            "acc1_last": self.last_test.get("acc1", float("nan")),
            "acc5_last": self.last_test.get("acc5", float("nan")),
            "acc1_best": self.best_acc1,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "seed": self.seed,
            "name": self.info.name,
            "job_type": self.info.job_type,
            "params": sum(p.numel() for p in self.model.parameters()),
            **self.info.tags,
            **self.info.summary_fields,
        }
        if self.teacher_acc1 is not None:
            summary["teacher_acc1"] = self.teacher_acc1
        if self.distiller is not None:
            summary["extra_params"] = self.distiller.extra_parameter_count()
        return summary
