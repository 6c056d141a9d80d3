"""The contract between the trainer and every distillation method.

The trainer knows no method by name. It hands a distiller the student's and the teacher's
outputs and the batch; the distiller returns named, already-weighted loss terms, which the
trainer adds to the weighted cross-entropy and logs one by one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distillbench.models.outputs import ModelOutput
from distillbench.types import Batch

__all__ = ["Batch", "Distiller"]


class Distiller(nn.Module):
    """Base class of every method. Owns only the method's trainable extras.

    Subclasses override ``forward`` and, when they add modules sized by the networks'
    features, ``setup``. Class attributes declare what the method reads:

    * ``preact``: the stage features are taken before their final ReLU (AB).
    * ``init_epochs``: epochs of a separate initialisation stage run before the main
      schedule (AB, FT, FSP); 0 for single-stage methods.
    * ``teacher_train_mode``: the teacher runs in train mode during training (its BN layers
      use batch statistics and their running statistics move, and are checkpointed).
    * ``teacher_grad``: the teacher's forward is recorded by autograd, so the method can
      differentiate through it (CRCD's gradient element). The teacher is still never
      optimised; its parameter gradients are discarded after every step.
    * ``teacher_cacheable``: the method reads only the teacher's logits and pooled embedding
      (``feats[-1]``) of a frozen eval-mode teacher, so they can come from a precomputed cache.
    * ``min_batch_size``: the fewest samples a training batch must hold for the loss to be defined
      and informative (methods that relate the samples of a batch to each other). The loaders
      leave out a last partial batch smaller than this, and say so in the log.
    """

    preact: bool = False
    init_epochs: int = 0
    teacher_train_mode: bool = False
    teacher_grad: bool = False
    teacher_cacheable: bool = False
    min_batch_size: int = 1

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        """Build extras from a dry forward of the real networks, before the optimiser exists.

        ``student`` and ``teacher`` are outputs on a small batch of zeros, so module sizes come
        from the actual feature shapes, never from tables of dimensions. ``train_labels`` is
        the label of every training sample, in dataset-index order (contrastive samplers draw
        negatives from it).
        """

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        raise NotImplementedError

    # ------------------------------------------------- two-stage methods only
    def init_modules(self, student: nn.Module) -> nn.Module:
        """What the init stage trains (e.g. the student's feature stages and a connector)."""
        raise NotImplementedError(f"{type(self).__name__} has init_epochs > 0 but no init_modules().")

    def init_lr(self, base_lr: float) -> float:
        """The init stage's constant lr; the main stage's base lr unless the method says otherwise."""
        return base_lr

    def init_loss(self, student: ModelOutput, teacher: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has init_epochs > 0 but no init_loss().")

    def end_init_stage(self) -> None:
        """Called once the init stage is over (also on resume), before the main optimiser exists:
        e.g. freeze modules that the main stage must not train."""

    def extra_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def defer_state_updates(self) -> None:
        """From now on, state written during a forward (memory-bank rows) waits for ``apply_state_updates``.

        The trainer calls this before its steps and ``apply_state_updates`` after each optimiser step: the
        same numbers as updating inside the forward, without overwriting what the backward still reads."""
        for module in self.modules():
            if hasattr(module, "apply_pending_updates"):
                module.defer_updates = True

    def apply_state_updates(self) -> None:
        for module in self.modules():
            if hasattr(module, "apply_pending_updates"):
                module.apply_pending_updates()


def as_float32(t: Tensor) -> Tensor:
    """Loss arithmetic runs in float32 even under autocast: logits of bf16 students lose KD's tail."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
