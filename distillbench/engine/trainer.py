"""One loop for every job: training a teacher, a vanilla student, or a distilled student.

The loop reads in one sitting: epochs of ``Step`` calls, then evaluation, the epoch's metrics and a
checkpoint. What happens in a step lives in ``step.py``, what a checkpoint holds in ``state.py``,
progress and step hooks in ``callbacks.py``; the trainer knows no method by name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distillbench.data.sampling import start_epoch
from distillbench.distillers.base import Batch, Distiller
from distillbench.engine import networks
from distillbench.engine.callbacks import Callback, PeriodicCheckpoint, Progress, StepHook
from distillbench.engine.checkpoint import save_atomic
from distillbench.engine.evaluation import evaluate
from distillbench.engine.init_stage import InitStage, make_init_optimizer
from distillbench.engine.metrics import EpochMeter
from distillbench.engine.preemption import StopRequests
from distillbench.engine.speed import SpeedOptions
from distillbench.engine.state import Checkpoints, TrainState
from distillbench.engine.step import DistillationObjective, Step
from distillbench.engine.summary import run_summary
from distillbench.engine.teacher_cache import teacher_cache_for
from distillbench.errors import DivergenceError
from distillbench.loggers.base import RunInfo, RunLogger
from distillbench.runtime import distributed
from distillbench.runtime.seeding import epoch_seed, seed_everything


class RunLock(Protocol):
    """The run directory's lock (``rundir.RunLock``), taken by the run-directory claim; the trainer releases it."""

    def release(self) -> None: ...


log = logging.getLogger("distillbench")

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

# The first non-finite step of an epoch, while there is none.
NEVER = torch.iinfo(torch.long).max

EXPORT_FILE = "model.pth"
# The weights of the best test top-1 so far, same format; written before the epoch's checkpoint, so a resumed
# run finds the file of its checkpoint's best_epoch on disk.
BEST_FILE = "model_best.pth"


class Trainer:
    """Trains ``model`` on ``train_loader``, optionally distilled from a frozen ``teacher``.

    Per epoch it records the lr, every loss term, train top-1, test top-1/top-5, the epoch
    time and the throughput; per run ``acc1_last``, ``acc1_best`` and ``best_epoch``. After
    each epoch it writes a checkpoint holding everything resuming needs. ``on_step(step, terms)``
    sees every step's loss terms as device tensors (loss trajectories, benchmarks); ``callbacks``
    see the loop's events (``engine/callbacks.py``).
    """

    def __init__(
        self, *, model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
        make_optimizer: OptimizerFactory, make_scheduler: SchedulerFactory, epochs: int, run_dir: str | Path,
        logger: RunLogger, info: RunInfo, device: str | torch.device = "cpu", teacher: nn.Module | None = None,
        distiller: Distiller | None = None, ce_weight: float = 1.0, seed: int = 0, resume: bool = False,
        expected_teacher_acc1: float | None = None, teacher_acc1_tolerance: float = 3.0,
        check_finite_every: int = 50, checkpoint_every_steps: int = 0, detect_anomaly: bool = False,
        progress: bool = True, speed: SpeedOptions | None = None, teacher_cache_dir: str | Path | None = None,
        teacher_cache_optional: bool = False, teacher_cache_dtype: str = "float32",
        on_step: Callable[[int, dict[str, Tensor]], None] | None = None,
        sync_bn: bool = False, run_lock: RunLock | None = None, callbacks: Sequence[Callback] = (),
    ):
        if distiller is not None and teacher is None:
            raise ValueError("A distiller needs a teacher; set distiller=none to train without one.")
        self.model, self.teacher, self.distiller, self.ce_weight = model, teacher, distiller, ce_weight
        self.train_loader, self.test_loader, self.epochs = train_loader, test_loader, epochs
        self.make_optimizer, self.make_scheduler = make_optimizer, make_scheduler
        self.run_dir, self.logger, self.info = Path(run_dir), logger, info
        self.device, self.seed, self.resume = torch.device(device), seed, resume
        self.expected_teacher_acc1, self.teacher_acc1_tolerance = expected_teacher_acc1, teacher_acc1_tolerance
        self.check_finite_every = max(1, check_finite_every)
        self.detect_anomaly, self.sync_bn, self.speed = detect_anomaly, sync_bn, speed or SpeedOptions()
        self.teacher_cache_dir, self.teacher_cache_optional = teacher_cache_dir, teacher_cache_optional
        self.teacher_cache_dtype = teacher_cache_dtype
        self.teacher_cache = None
        self.run_lock = run_lock  # held from the run-directory checks to the end of the run
        self.stop = StopRequests()
        self.is_main = distributed.rank() == 0
        self.checkpoints = Checkpoints(run_dir=self.run_dir, model=model, teacher=teacher, distiller=distiller,
                                       logger=logger, info=info, seed=seed, is_main=self.is_main)
        self.callbacks: list[Callback] = [
            Progress(progress, every_steps=self.check_finite_every),
            StepHook(),
            *([PeriodicCheckpoint(checkpoint_every_steps)] if checkpoint_every_steps > 0 else []),
            *callbacks,
        ]
        self.on_step = on_step
        self.teacher_acc1: float | None = None
        self.state = TrainState()

    def emit(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _setup(self) -> None:
        """Networks ready for the first step; an incompatible pair fails before any long work."""
        seed_everything(self.seed)
        self.model.to(self.device)
        if self.teacher is not None:
            networks.freeze(self.teacher, self.device)
        if self.distiller is not None:
            networks.set_up_distiller(self.distiller, self.model, self.teacher, self.train_loader.dataset,
                                      self.device)
        if self.teacher is not None:
            self.teacher_acc1 = networks.check_teacher(self.teacher, self.test_loader, self.device,
                                                       self.expected_teacher_acc1, self.teacher_acc1_tolerance)
        if self.teacher_cache_dir is not None and self.distiller is not None:
            self.teacher_cache = teacher_cache_for(self.teacher, self.distiller, self.train_loader,
                                                   self.teacher_cache_dir, optional=self.teacher_cache_optional,
                                                   dtype=self.teacher_cache_dtype)
        self.student_fn, self.teacher_fn = networks.prepare(self.model, self.teacher, self.speed, self.sync_bn)

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
            self._setup()
            saved = self.checkpoints.load() if self.resume else None
            if saved is not None:
                self.checkpoints.restore_common(saved)
            self.logger.start(self.info, saved["logger"] if saved is not None else None)
            success = False
            try:
                with torch.autograd.set_detect_anomaly(self.detect_anomaly):
                    summary = yield from self._run(saved)
                self.logger.log_summary(summary)
                success = True
                return summary
            finally:
                self.logger.finish(success)
        finally:
            if self.run_lock is not None:  # the run directory is free for the next writer
                self.run_lock.release()

    def _run(self, saved: dict | None) -> Generator[None, None, dict]:
        init_epochs = self.distiller.init_epochs if self.distiller is not None else 0
        if init_epochs:
            self._run_init_stage(saved["init_epoch"] if saved is not None else 0, saved)
        self.state.init_epoch = init_epochs
        if self.epochs == 0:  # an evaluation (role=eval): the network as it was loaded, no optimiser
            self.state.last_test = evaluate(self.model, self.test_loader, self.device)
            self.state.best_acc1, self.state.best_epoch = self.state.last_test["acc1"], 0
            return self._summary()
        self.optimizer = self.make_optimizer(self._trainable_parameters())
        self.scheduler = self.make_scheduler(self.optimizer)
        if saved is not None and "optimizer" in saved:
            self.state = self.checkpoints.restore_main(saved, self.optimizer, self.scheduler)
        objective = DistillationObjective(student_fn=self.student_fn, teacher_fn=self.teacher_fn,
                                          distiller=self.distiller, ce_weight=self.ce_weight, speed=self.speed,
                                          device=self.device, teacher_cache=self.teacher_cache)
        compile_mode = self.speed.compile_mode if self.speed.whole_step else None
        self.train_step = Step(objective, self.optimizer, self._distiller_parameters, self._after_step,
                               compile_mode=compile_mode, compile_backend=self.speed.compile_backend)
        if self.distiller is not None:
            self.distiller.defer_state_updates()
        for epoch in range(self.state.epoch + 1, self.epochs + 1):
            yield from self._run_epoch(epoch)
        summary = self._summary()  # first: summary.json marks the end
        self._export(EXPORT_FILE, summary["acc1_last"], self.epochs)
        return summary

    def _run_epoch(self, epoch: int) -> Generator[None]:
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        train = yield from self._train_one_epoch(epoch)
        train_seconds = time.perf_counter() - start
        distributed.broadcast_buffers(self.model)
        test = evaluate(self.model, self.test_loader, self.device)
        self.scheduler.step()
        self.state.epoch, self.state.step, self.state.meter, self.state.last_test = epoch, 0, None, test
        if test["acc1"] > self.state.best_acc1:
            self.state.best_acc1, self.state.best_epoch = test["acc1"], epoch
            self._export(BEST_FILE, test["acc1"], epoch)
        metrics = {
            "epoch": epoch, "lr": lr, **{f"train/{k}": v for k, v in train.items()},
            "test/acc1": test["acc1"], "test/acc5": test["acc5"], "test/loss": test["loss"],
            "time/epoch_s": time.perf_counter() - start,
            "time/images_per_s": len(self.train_loader.dataset) / max(train_seconds, 1e-9),
            **({"teacher/acc1": self.teacher_acc1} if self.teacher_acc1 is not None else {}),
        }
        self.logger.log_epoch(metrics)
        self.emit("on_epoch_end", epoch, metrics)
        self.stop.agree(self.device)
        self.checkpoints.save(self.checkpoints.main_stage(self.state, self.optimizer, self.scheduler))
        self.stop.raise_if_requested(f"after epoch {epoch}", self.checkpoint_dir)

    def _train_one_epoch(self, epoch: int) -> Generator[None, None, dict[str, float]]:
        first_step = self.state.step  # > 0 when resuming inside this epoch
        if first_step == 0:
            torch.manual_seed(epoch_seed(self.seed, epoch))
        start_epoch(self.train_loader, epoch, first_step * self.train_loader.batch_size * distributed.world_size())
        self.model.train()
        if self.distiller is not None:
            self.distiller.train()
            self.teacher.train(self.distiller.teacher_train_mode)
        self.meter = EpochMeter(self.device)
        if self.state.meter is not None and self.is_main:  # the saved sums are all ranks' already
            self.meter.load_state_dict(self.state.meter)
        steps = first_step + len(self.train_loader)
        self.first_bad_step = torch.full((), NEVER, dtype=torch.long, device=self.device)
        self.emit("on_epoch_start", epoch, first_step, steps)
        for step, item in enumerate(self.train_loader, start=first_step + 1):
            batch = Batch.from_loader(item, self.device, self.speed.prepare_images)
            out = self.train_step(batch, epoch)
            self.meter.add_block(out.sum_names, out.sums, len(batch.labels))
            self.first_bad_step = torch.minimum(self.first_bad_step, torch.where(out.finite, NEVER, step))
            self.emit("on_step_end", epoch, step, out)
            if step % self.check_finite_every == 0:
                self._raise_if_diverged(epoch)
                self.stop.agree(self.device)
            if step < steps and self.stop.requested:
                self.save_mid_epoch(epoch, step)
            yield
        self._raise_if_diverged(epoch)
        return self.meter.averages()

    def save_mid_epoch(self, epoch: int, step: int) -> None:
        """A checkpoint ``step`` steps into ``epoch``; then the run stops if a stop was requested."""
        self._raise_if_diverged(epoch)
        self.state.step, self.state.meter = step, self.meter.state_dict()
        self.checkpoints.save(self.checkpoints.main_stage(self.state, self.optimizer, self.scheduler))
        self.state.step, self.state.meter = 0, None
        self.stop.raise_if_requested(f"at step {step} of epoch {epoch}", self.checkpoint_dir)

    def _run_init_stage(self, done: int, saved: dict | None) -> None:
        """Two-stage methods: train the distiller's init modules, checkpointing each init epoch.

        A run interrupted inside the init stage resumes at the start of the unfinished init epoch.
        """
        total = self.distiller.init_epochs
        if done < total:
            modules = self.distiller.init_modules(self.model)
            optimizer = make_init_optimizer(self.make_optimizer, modules, self.distiller.init_lr)
            if saved is not None and "init_optimizer" in saved:
                optimizer.load_state_dict(saved["init_optimizer"])
            stage = InitStage(model=self.model, teacher=self.teacher, distiller=self.distiller,
                              loader=self.train_loader, device=self.device, seed=self.seed, optimizer=optimizer,
                              on_step=lambda epoch, step, out: self.emit("on_init_step_end", epoch, step, out))
            for init_epoch in range(done + 1, total + 1):
                self.emit("on_init_epoch_start", init_epoch)
                metrics = stage.run_epoch(init_epoch)
                self.logger.log_init_epoch(metrics)
                self.emit("on_init_epoch_end", init_epoch, metrics)
                self.checkpoints.save(self.checkpoints.init_stage(init_epoch, optimizer))
                self.stop.raise_if_requested(f"after init epoch {init_epoch}", self.checkpoint_dir)
        self.distiller.end_init_stage()

    def _raise_if_diverged(self, epoch: int) -> None:
        first_bad_step = self.first_bad_step
        if distributed.is_distributed():  # the first bad step of any rank, on every rank
            first_bad_step = distributed.all_reduce_min(first_bad_step)
        step = int(first_bad_step)
        if step == NEVER:
            return
        bad_terms = [k.removeprefix("loss_") for k, v in self.meter.sums.items()
                     if k.startswith("loss_") and not torch.isfinite(v)]
        raise DivergenceError(
            f"Loss term(s) {', '.join(repr(t) for t in bad_terms) or 'total'} became NaN or Inf at epoch {epoch}, "
            f"step {step}. Training stopped; the last good checkpoint (after epoch {epoch - 1}) is kept in "
            f"{self.checkpoint_dir}. Lower the learning rate or the term's weight, or rerun with "
            "trainer.detect_anomaly=true to find the operation that produced it."
        )

    # --------------------------------------------------------------- helpers
    @property
    def checkpoint_dir(self) -> Path:
        return self.checkpoints.dir

    def _summary(self) -> dict:
        return run_summary(self.state, self.info, model=self.model, epochs=self.epochs, seed=self.seed,
                           teacher_acc1=self.teacher_acc1, distiller=self.distiller)

    def _distiller_parameters(self) -> list[nn.Parameter]:
        return list(self.distiller.parameters()) if self.distiller is not None else []

    def _after_step(self) -> None:
        if self.distiller is not None:
            self.distiller.apply_state_updates()
            if self.distiller.teacher_grad:  # the teacher is never optimised
                self.teacher.zero_grad(set_to_none=True)

    def _trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in [*self.model.parameters(), *self._distiller_parameters()] if p.requires_grad]

    def _export(self, name: str, acc1: float, epoch: int) -> None:
        """The model's weights as ``{'model': state_dict, 'acc1', 'epoch', 'arch'}`` in ``run_dir/name`` (rank 0)."""
        if self.is_main:
            save_atomic({"model": self.model.state_dict(), "acc1": acc1, "epoch": epoch,
                         "arch": self.info.tags.get("arch")}, self.run_dir / name)
