"""The initialisation stage of two-stage methods (AB, FT, FSP), run before the main schedule.

For ``init_epochs`` epochs only the modules the distiller names are trained, with their own
SGD at a constant lr, on the distiller's ``init_loss``; the student network itself is kept
in eval mode except for modules the distiller hands over (AB and FSP train the student's
feature stages). This is the reference two-stage procedure; afterwards the main stage starts
with a fresh optimiser.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from distillbench.data.sampling import start_epoch
from distillbench.distillers.base import Batch, Distiller
from distillbench.engine import distributed
from distillbench.engine.metrics import EpochMeter
from distillbench.engine.seeding import epoch_seed
from distillbench.errors import DivergenceError
from distillbench.models.outputs import forward_features, frozen_forward


def init_epoch_id(epoch: int) -> int:
    """Init epochs draw their data order from their own seeds, distinct from the main epochs'."""
    return -epoch


class InitStage:
    def __init__(self, *, model: nn.Module, teacher: nn.Module, distiller: Distiller, loader: DataLoader,
                 device: torch.device, optimizer: Optimizer, seed: int, progress: bool = True):
        self.model = model
        self.teacher = teacher
        self.distiller = distiller
        self.loader = loader
        self.device = device
        self.optimizer = optimizer
        self.seed = seed
        self.progress = progress

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """One init epoch; returns the mean of each init loss term and the epoch time."""
        start = time.perf_counter()
        torch.manual_seed(epoch_seed(self.seed, init_epoch_id(epoch)))
        start_epoch(self.loader, init_epoch_id(epoch))
        self.model.eval()
        trained = self.distiller.init_modules(self.model)
        trained.train()
        meter = EpochMeter(self.device)
        preact = self.distiller.preact
        for images, labels, index, *_ in tqdm(self.loader, desc=f"init {epoch}/{self.distiller.init_epochs}",
                                          leave=False, disable=not self.progress, dynamic_ncols=True):
            batch = Batch(images.to(self.device), labels.to(self.device), index.to(self.device))
            teacher_out = frozen_forward(self.teacher, batch.images, preact=preact)
            student_out = forward_features(self.model, batch.images, preact=preact)
            terms = self.distiller.init_loss(student_out, teacher_out, batch)
            loss = torch.stack([t.float() for t in terms.values()]).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(trained.parameters())
            self.optimizer.step()
            meter.add({f"init/loss_{k}": v for k, v in terms.items()}, len(batch.labels))
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
