"""The initialisation stage of two-stage methods (AB, FT, FSP), run before the main schedule.

For ``init_epochs`` epochs only the modules the distiller names are trained, with their own
SGD at a constant lr, on the distiller's ``init_loss``; the student network itself is kept
in eval mode except for modules the distiller hands over (AB and FSP train the student's
feature stages). This is the reference two-stage procedure; afterwards the main stage starts
with a fresh optimiser. Each batch goes through the same ``Step`` as the main loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from torch.optim import Optimizer

from distillbench.data.sampling import start_epoch
from distillbench.distillers.base import Distiller
from distillbench.engine.metrics import EpochMeter
from distillbench.engine.step import InitObjective, Step, StepOutput
from distillbench.errors import DivergenceError
from distillbench.runtime.seeding import epoch_seed
from distillbench.types import Batch


def init_epoch_id(epoch: int) -> int:
    """Init epochs draw their data order from their own seeds, distinct from the main epochs'."""
    return -epoch


class InitStage:
    """Runs init epochs of ``distiller``'s init modules; ``on_step(init_epoch, step, out)`` after each step."""

    def __init__(self, *, model: nn.Module, teacher: nn.Module, distiller: Distiller, loader, device: torch.device,
                 seed: int, optimizer: Optimizer, on_step: Callable[[int, int, StepOutput], None] | None = None):
        self.model, self.loader, self.device, self.seed, self.on_step = model, loader, device, seed, on_step
        self.trained = distiller.init_modules(model)
        objective = InitObjective(model=model, teacher=teacher, distiller=distiller)
        self.step = Step(objective, optimizer, self.trained.parameters)

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """One init epoch; returns the mean of each init loss term and the epoch time."""
        start = time.perf_counter()
        torch.manual_seed(epoch_seed(self.seed, init_epoch_id(epoch)))
        start_epoch(self.loader, init_epoch_id(epoch))
        self.model.eval()
        self.trained.train()
        meter = EpochMeter(self.device)
        for step, item in enumerate(self.loader, start=1):
            batch = Batch.from_loader(item, self.device)
            out = self.step(batch, epoch)
            # the step's sums without the total (the init stage logs its terms only), already times the batch
            meter.add_block(tuple(f"init/loss_{k}" for k in out.terms), out.sums[1:len(out.terms) + 1],
                            len(batch.labels))
            if self.on_step is not None:
                self.on_step(epoch, step, out)
        averages = meter.averages()
        for name, value in averages.items():
            if not torch.isfinite(torch.tensor(value)):
                raise DivergenceError(
                    f"Init-stage loss {name} became NaN or Inf in init epoch {epoch}. Training stopped; the last "
                    "good checkpoint (after the previous init epoch) is kept. Lower the learning rate or the "
                    "init stage's lr, or rerun with trainer.detect_anomaly=true to find the operation."
                )
        return {"init/epoch": epoch, **averages, "init/epoch_s": time.perf_counter() - start}


def make_init_optimizer(make_optimizer: Callable[[list[nn.Parameter]], Optimizer], modules: nn.Module,
                        init_lr: Callable[[float], float]) -> Optimizer:
    """The main optimiser's kind and settings (momentum, weight decay) at the init stage's own lr,
    which ``init_lr`` derives from the main stage's base lr."""
    optimizer = make_optimizer([p for p in modules.parameters() if p.requires_grad])
    for group in optimizer.param_groups:
        group["lr"] = init_lr(group["lr"])
    return optimizer
