"""What the trainer looks for in an optimiser that wants the task and distillation losses apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class LossSplittingOptimizer(Protocol):
    """``loss_steps`` returns ``(loss, step)`` pairs; for each in order the trainer clears the gradients,
    back-propagates the loss (keeping the graph for the next one) and calls ``step``."""

    def loss_steps(self, task_loss: Tensor, distill_loss: Tensor) -> list[tuple[Tensor, Callable[[], None]]]: ...
