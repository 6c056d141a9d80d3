"""Optimisers beyond torch.optim. An optimiser with ``loss_steps(task_loss, distill_loss)`` is given the
two losses separately by the trainer (``LossSplittingOptimizer``); every other one gets their sum."""

from distillbench.optim.dot import DOT
from distillbench.optim.protocol import LossSplittingOptimizer

__all__ = ["DOT", "LossSplittingOptimizer"]
