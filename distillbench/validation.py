"""Start-up checks of the values a user types: numbers in range, names from a list.

They run before anything is built or written, so a typo ends in one paragraph that names the key,
the value, what is allowed and how to fix it, never in a traceback an hour into training.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from distillbench.errors import ConfigError

# eval: a released network evaluated as it is, not trained (the ImageNet teachers' rows).
ROLES = ("student", "teacher", "probe", "eval")
LOADERS = ("auto", "torch", "device", "jpeg_device")
WANDB_MODES = ("auto", "online", "offline", "disabled")
PRECISIONS = ("auto", "float32", "bf16")
# Distiller arguments that are numbers by nature; anything named *weight* or *temperature* too.
NUMERIC_NAMES = ("weight", "temperature", "momentum", "margin", "beta", "alpha", "gamma", "tau")


def _fail(key: str, value: Any, want: str, hint: str = "") -> None:
    raise ConfigError(f"{key}={value!r} is not valid: it must be {want}. {hint}".strip())


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(key: str, value: Any, minimum: int, hint: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(key, value, f"a whole number >= {minimum}", hint)


def check_number(key: str, value: Any, minimum: float | None = None, hint: str = "") -> None:
    if not _is_number(value) or (minimum is not None and value < minimum):
        _fail(key, value, "a number" + (f" >= {minimum}" if minimum is not None else ""), hint)


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        _fail(key, value, "one of " + ", ".join(map(str, choices)))


def _numeric_by_name(name: str) -> bool:
    return name in NUMERIC_NAMES or name.endswith(("_weight", "_weights", "_temperature")) or "weight" in name


def check_method_numbers(prefix: str, method: Mapping[str, Any]) -> None:
    """Every weight or temperature of a distiller (nested combinations included) is a number, or a list
    of numbers (one per feature stage)."""
    for name, value in method.items():
        key = f"{prefix}.{name}"
        if isinstance(value, Mapping):
            check_method_numbers(key, value)
        elif _numeric_by_name(str(name)) and value is not None:
            values = value if isinstance(value, list | tuple) else [value]
            for v in values:
                check_number(key, v, hint="Pass a plain number, e.g. 0.9.")


def validate(cfg: Mapping[str, Any]) -> None:
    """Raise a ``ConfigError`` for the first value that cannot work. ``cfg`` is the composed config."""
    check_choice("role", cfg.get("role"), ROLES)
    check_int("seed", cfg.get("seed"), 0)
    trainer, dataset = cfg["trainer"], cfg["dataset"]
    if cfg.get("role") != "eval":  # an evaluation trains no epoch
        check_int("trainer.epochs", trainer.get("epochs"), 1, "A run trains at least one epoch.")
    check_int("dataset.batch_size", dataset.get("batch_size"), 1)
    check_int("dataset.test_batch_size", dataset.get("test_batch_size"), 1)
    for key in ("num_workers", "test_num_workers"):
        if key in dataset:
            check_int(f"dataset.{key}", dataset.get(key), 0)
    check_choice("dataset.loader", dataset.get("loader", "auto"), LOADERS)
    for key, count in (dataset.get("subset") or {}).items():  # debug runs (configs/debug/)
        if count is not None:
            check_int(f"dataset.subset.{key}", count, 1, "null keeps the whole split.")
    check_int("trainer.check_finite_every", trainer.get("check_finite_every", 1), 1)
    check_int("trainer.checkpoint_every_steps", trainer.get("checkpoint_every_steps", 0), 0)
    check_choice("trainer.precision", trainer.get("precision", "float32"), PRECISIONS)
    check_choice("logger.wandb.mode", cfg["logger"]["wandb"].get("mode"), WANDB_MODES)
    optim = cfg.get("optim") or {}
    for key in ("lr", "momentum", "weight_decay"):
        if key in optim:
            check_number(f"optim.{key}", optim[key], 0.0)
    distiller = cfg.get("distiller") or {}
    if cfg.get("role") == "student" and distiller:
        check_number("distiller.ce_weight", distiller.get("ce_weight"), 0.0)
        if distiller.get("method"):
            check_method_numbers("distiller.method", distiller["method"])
