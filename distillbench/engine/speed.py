"""The switches that make a training step fast without changing the recipe.

Each switch is a config key (``trainer.precision``, ``trainer.channels_last``,
``trainer.compile``, ``trainer.fused_optimizer``, ``trainer.teacher_cache``). The defaults
(``configs/trainer/default.yaml``) are the reference settings on every device, as the papers
trained; ``trainer=fast`` (``configs/trainer/fast.yaml``) turns the fast ones on, and ``auto``
picks the fast setting on a CUDA GPU and the reference setting elsewhere. What each one changes,
and how far results may move, is measured by ``scripts/bench.py`` and the parity tests.

* ``precision=bf16``: the student's forward and the distiller run under bf16 autocast; weights,
  optimiser state, BN statistics and every loss term stay float32. The teacher runs in float32.
* ``channels_last``: NHWC strides for both networks and the batches (faster convolutions).
* ``compile``: ``torch.compile`` of the student and the teacher forward (``reduce-overhead``
  adds CUDA graphs). With ``compile_scope=step`` the whole training step is compiled as one unit
  instead (forwards, every loss term, backward through compiled autograd, the optimiser step and the
  memory updates), which leaves the fewest host launches per step (``scripts/bench.py --count-ops``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from distillbench.errors import ConfigError

PRECISIONS = ("float32", "bf16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_SCOPES = ("models", "step")


@dataclass(frozen=True)
class SpeedOptions:
    precision: str = "float32"
    channels_last: bool = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    compile_scope: str = "models"

    @property
    def whole_step(self) -> bool:
        """The training step is compiled as one unit (and the models are not compiled on their own)."""
        return self.compile_mode is not None and self.compile_scope == "step"

    @classmethod
    def resolve(
        cls,
        device: torch.device,
        precision: str = "float32",
        channels_last: bool | str = False,
        compile: bool | str | None = False,  # noqa: A002 - the config key's name
        compile_backend: str = "inductor",
        compile_scope: str = "models",
    ) -> SpeedOptions:
        """Turn config values (``auto`` allowed) into settings for ``device``; bad values are ConfigErrors."""
        on_gpu = device.type == "cuda"
        if precision == "auto":
            precision = "bf16" if on_gpu else "float32"
        if precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be one of {', '.join(PRECISIONS)} or auto, got '{precision}'.")
        if channels_last == "auto":
            channels_last = on_gpu
        if not isinstance(channels_last, bool):
            raise ConfigError(f"trainer.channels_last must be true, false or auto, got '{channels_last}'.")
        if compile in (False, None, "none"):
            mode = None
        elif compile is True:
            mode = "default"
        elif compile in COMPILE_MODES:
            mode = compile
        else:
            raise ConfigError(
                f"trainer.compile must be false, true or one of {', '.join(COMPILE_MODES)}, got '{compile}'."
            )
        if compile_scope not in COMPILE_SCOPES:
            raise ConfigError(
                f"trainer.compile_scope must be one of {', '.join(COMPILE_SCOPES)}, got '{compile_scope}'."
            )
        return cls(precision, channels_last, mode, compile_backend, compile_scope)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bf16 autocast for the student and the distiller, or nothing."""
        if self.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare_model(self, model: nn.Module) -> None:
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

    def prepare_images(self, images: Tensor) -> Tensor:
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def compiled(self, model: nn.Module) -> nn.Module:
        """``model`` compiled as asked; the original module keeps the weights and the state_dict keys."""
        if self.compile_mode is None or self.whole_step:
            return model
        return torch.compile(model, mode=self.compile_mode, backend=self.compile_backend)


def use_fused_optimizer(setting: bool | str, device: torch.device) -> bool | None:
    """``fused=`` for torch.optim: True/False as asked, auto = fused on CUDA (torch's default elsewhere)."""
    if setting == "auto":
        return True if device.type == "cuda" else None
    if not isinstance(setting, bool):
        raise ConfigError(f"trainer.fused_optimizer must be true, false or auto, got '{setting}'.")
    return setting
