"""DOT, the Distillation-Oriented Trainer (Zhao et al., ICCV 2023): SGD with one momentum per loss.

The task loss (cross-entropy) and the distillation loss each get their own momentum buffer, the
distillation one the heavier (``momentum + delta``) and the task one the lighter
(``momentum - delta``), so the update leans on the distillation gradients. The rule follows
mdistiller's ``mdistiller/engine/dot.py`` (commit a08d46f) term for term, quirks included:

- a parameter with a task gradient gets weight decay on it; its distillation gradient gets none;
  a parameter reached only by the distillation loss gets weight decay there, except on its
  first step (the buffer starts as the bare gradient);
- a buffer of a parameter that only one of the two losses reaches uses the mean momentum;
- the task update is applied first, then the distillation one.

Each step takes two backward passes, distillation first:
``zero_grad; distill.backward(retain_graph=True); step_distill(); zero_grad; task.backward(); step()``.
``loss_steps`` hands the trainer that order, so the trainer never names this optimizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

# The per-parameter state keys, as mdistiller names them, so a state dict reads the same.
TASK_BUFFER = "momentum_buffer"
DISTILL_BUFFER = "momentum_kd_buffer"


class DOT(Optimizer):
    """SGD with separate momenta for the task and the distillation gradients.

    ``momentum`` and ``delta`` are mdistiller's ``SOLVER.MOMENTUM`` and ``SOLVER.DOT.DELTA``: the task
    buffer uses ``momentum - delta``, the distillation buffer ``momentum + delta`` (its
    ``engine/trainer.py``, class ``DOT``). ``fused`` exists for the trainer's factory and changes
    nothing: there is no fused kernel.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, delta: float = 0.075,
                 weight_decay: float = 0.0, dampening: float = 0.0, fused: bool | None = None):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= delta <= momentum:
            raise ValueError(f"DOT needs 0 <= delta <= momentum, got delta={delta}, momentum={momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {"lr": lr, "momentum": momentum, "delta": delta, "weight_decay": weight_decay,
                    "dampening": dampening}
        super().__init__(params, defaults)
        # Distillation gradients taken by ``step_distill``, waiting for ``step``; empty between steps,
        # so nothing here needs checkpointing.
        self._distill_grads: dict[Tensor, Tensor] = {}

    def loss_steps(self, task_loss: Tensor, distill_loss: Tensor) -> list[tuple[Tensor, Callable[[], None]]]:
        """(loss, what to call after its backward) in the reference's order: distillation, then task."""
        return [(distill_loss, self.step_distill), (task_loss, self.step)]

    @torch.no_grad()
    def step_distill(self) -> None:
        """Take the gradients now in ``.grad`` as the distillation gradients.

        They are moved out (``.grad`` is left None), so a following ``zero_grad`` of either kind
        cannot clear them before ``step`` uses them.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._distill_grads[p] = p.grad
                    p.grad = None

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Apply the task gradients in ``.grad``, then the distillation gradients ``step_distill`` took."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        distill_grads, self._distill_grads = self._distill_grads, {}
        for group in self.param_groups:
            lr, decay, dampening = group["lr"], group["weight_decay"], group["dampening"]
            # mdistiller/engine/trainer.py, class DOT: m_task = MOMENTUM - DELTA, m_kd = MOMENTUM + DELTA;
            # mdistiller/engine/dot.py, dot(): (momentum_kd + momentum) / 2. for a one-loss buffer.
            m_task = group["momentum"] - group["delta"]
            m_kd = group["momentum"] + group["delta"]
            m_mean = (m_kd + m_task) / 2.0
            for p in group["params"]:
                task_grad, distill_grad = p.grad, distill_grads.get(p)
                if task_grad is not None:
                    self._task_update(p, task_grad, distill_grad is not None, lr, decay, dampening, m_task, m_mean)
                if distill_grad is not None:
                    self._distill_update(p, distill_grad, task_grad is not None, lr, decay, dampening, m_kd, m_mean)
        return loss

    def _task_update(self, p: Tensor, grad: Tensor, also_distilled: bool, lr: float, decay: float,
                     dampening: float, m_task: float, m_mean: float) -> None:
        """mdistiller/engine/dot.py, dot(), first loop."""
        state = self.state[p]
        if decay != 0:
            grad = grad.add(p, alpha=decay)
        if m_task != 0:
            buf = state.get(TASK_BUFFER)
            if buf is None:
                buf = torch.clone(grad).detach()
            else:
                buf.mul_(m_task if also_distilled else m_mean).add_(grad, alpha=1 - dampening)
            state[TASK_BUFFER] = buf
            grad = buf
        else:
            state.setdefault(TASK_BUFFER, None)
        p.add_(grad, alpha=-lr)

    def _distill_update(self, p: Tensor, grad: Tensor, also_task: bool, lr: float, decay: float,
                        dampening: float, m_kd: float, m_mean: float) -> None:
        """mdistiller/engine/dot.py, dot(), second loop: always through a buffer."""
        state = self.state[p]
        buf = state.get(DISTILL_BUFFER)
        if buf is None:
            buf = torch.clone(grad).detach()
        elif also_task:
            buf.mul_(m_kd).add_(grad, alpha=1 - dampening)
        else:
            if decay != 0:
                grad = grad.add(p, alpha=decay)
            buf.mul_(m_mean).add_(grad, alpha=1 - dampening)
        state[DISTILL_BUFFER] = buf
        p.add_(buf, alpha=-lr)
