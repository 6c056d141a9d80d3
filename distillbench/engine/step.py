"""One optimisation step for one batch: the unit the main loop and the init stage share.

A ``Step`` asks its objective for named loss terms, backpropagates their sum (or, for an optimiser
with ``loss_steps`` such as DOT, each part with its own optimiser step), averages the gradients of
the modules DDP does not wrap, and steps. It returns the terms as device tensors and never reads a
value on the host, so a step can be queued on a GPU without waiting for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch._dynamo
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from distillbench.distillers.base import Distiller
from distillbench.engine.metrics import correct_topk
from distillbench.engine.speed import SpeedOptions
from distillbench.engine.teacher_cache import TeacherCache
from distillbench.errors import ConfigError
from distillbench.models.outputs import ModelOutput, forward_features, frozen_forward
from distillbench.runtime import distributed
from distillbench.types import Batch

# (logits or None, named terms): what an objective returns for one batch.
Objective = Callable[[Batch, int], tuple[Tensor | None, dict[str, Tensor]]]


@dataclass
class StepOutput:
    """A step's total loss, its named terms and the student's logits, all detached device tensors, and
    ``sums``: what the step adds to the epoch's meter, one vector in the order of ``sum_names``."""

    loss: Tensor
    terms: dict[str, Tensor]
    logits: Tensor | None
    sums: Tensor | None = None
    finite: Tensor | None = None  # whether the total loss is finite (a bool tensor)

    @property
    def sum_names(self) -> tuple[str, ...]:
        return ("loss", *(f"loss_{k}" for k in self.terms), *(("acc1",) if self.logits is not None else ()))


class Step:
    """``step(batch, epoch)``: one optimisation step. ``compile_mode`` compiles the whole step as one unit."""

    def __init__(self, objective: Objective, optimizer: Optimizer,
                 synced_parameters: Callable[[], Iterable[nn.Parameter]] = tuple,
                 after_step: Callable[[], None] | None = None, *, compile_mode: str | None = None,
                 compile_backend: str = "inductor"):
        self.objective = objective
        self.optimizer = optimizer
        self.synced_parameters = synced_parameters  # averaged over ranks after backward (not DDP-wrapped)
        self.after_step = after_step
        self.compiled = None
        if compile_mode is not None:
            check_whole_step_compile()
            # Compiled autograd: a backward() inside a compiled region is traced and compiled too, gradient
            # accumulation included. Process-wide (a scoped patch is not seen where Dynamo reads it); backward
            # calls outside compiled regions, as in compile_scope=models, run as before.
            torch._dynamo.config.compiled_autograd = True
            self.compiled = torch.compile(self.run, mode=compile_mode, backend=compile_backend)

    def __call__(self, batch: Batch, epoch: int) -> StepOutput:
        return self.run(batch, epoch) if self.compiled is None else self.compiled(batch, epoch)

    def run(self, batch: Batch, epoch: int) -> StepOutput:
        logits, terms = self.objective(batch, epoch)
        stacked = torch.stack([t.float() for t in terms.values()])
        loss = stacked.sum()
        parts = [(loss, self.optimizer.step)]
        if hasattr(self.optimizer, "loss_steps") and len(terms) > 1:
            distill = torch.stack([t.float() for name, t in terms.items() if name != "ce"]).sum()
            parts = self.optimizer.loss_steps(terms["ce"], distill)
        for i, (part, optimizer_step) in enumerate(parts, start=1):
            self.optimizer.zero_grad(set_to_none=True)
            part.backward(retain_graph=i < len(parts))
            distributed.average_gradients(self.synced_parameters())
            optimizer_step()
        if self.after_step is not None:
            self.after_step()
        # the meter's share, computed here so a compiled step adds it in the same program
        n = batch.labels.shape[0]
        sums = torch.cat([loss.detach().reshape(1), stacked.detach()]) * n
        if logits is not None:
            correct = correct_topk(logits.detach(), batch.labels, (1,))[0] * 100.0
            sums = torch.cat([sums, correct.float().reshape(1)])
        return StepOutput(loss.detach(), {k: v.detach() for k, v in terms.items()},
                          logits.detach() if logits is not None else None, sums, torch.isfinite(loss.detach()))


def check_whole_step_compile() -> None:
    """Whole-step compile needs torch.compile's compiled autograd (torch>=2.4)."""
    if not hasattr(torch._dynamo.config, "compiled_autograd"):
        raise ConfigError(
            f"trainer.compile_scope=step compiles the backward with torch.compile's compiled autograd, which "
            f"torch {torch.__version__} lacks (torch>=2.4 has it). Use trainer.compile_scope=models, or upgrade torch."
        )


class DistillationObjective:
    """``ce_weight * CE`` plus the distiller's terms; under bf16 autocast only the student and the distiller run.

    With no distiller it is plain cross-entropy (teachers, vanilla students)."""

    def __init__(self, *, student_fn: nn.Module, teacher_fn: nn.Module | None, distiller: Distiller | None,
                 ce_weight: float, speed: SpeedOptions, device: torch.device,
                 teacher_cache: TeacherCache | None = None):
        self.student_fn = student_fn
        self.teacher_fn = teacher_fn
        self.distiller = distiller
        self.ce_weight = ce_weight
        self.speed = speed
        self.device = device
        self.teacher_cache = teacher_cache

    def teacher_outputs(self, batch: Batch) -> ModelOutput:
        preact = self.distiller.preact
        if self.teacher_cache is not None:
            return self.teacher_cache.lookup(batch.index, batch.view)
        if self.distiller.teacher_grad:
            return forward_features(self.teacher_fn, batch.images, preact=preact)
        return frozen_forward(self.teacher_fn, batch.images, preact=preact)

    def __call__(self, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        if self.distiller is None:
            with self.speed.autocast(self.device):
                logits = self.student_fn(batch.images)
            return logits, {"ce": self.ce_weight * F.cross_entropy(logits.float(), batch.labels)}
        teacher_out = self.teacher_outputs(batch)
        with self.speed.autocast(self.device):
            student_out = forward_features(self.student_fn, batch.images, preact=self.distiller.preact)
            distilled = self.distiller(student_out, teacher_out, batch, epoch)
        terms = {"ce": self.ce_weight * F.cross_entropy(student_out.logits.float(), batch.labels)}
        for name, value in distilled.items():
            if name in terms:
                raise ValueError(f"The distiller returned a loss term named '{name}', which is reserved.")
            terms[name] = value.float()
        return student_out.logits, terms


class InitObjective:
    """The init stage of a two-stage method (AB, FT, FSP): the distiller's ``init_loss``, in full precision."""

    def __init__(self, *, model: nn.Module, teacher: nn.Module, distiller: Distiller):
        self.model = model
        self.teacher = teacher
        self.distiller = distiller

    def __call__(self, batch: Batch, epoch: int) -> tuple[None, dict[str, Tensor]]:
        preact = self.distiller.preact
        teacher_out = frozen_forward(self.teacher, batch.images, preact=preact)
        student_out = forward_features(self.model, batch.images, preact=preact)
        return None, self.distiller.init_loss(student_out, teacher_out, batch)
