"""Checkpoints that survive a crash mid-write, and weight loading that explains mismatches.

A training checkpoint is written to a temporary file, fsynced and renamed over
``last.pt``; the previous one is kept as ``prev.pt`` until then, so a kill at any moment
leaves at least one complete checkpoint. Every load uses ``weights_only=True``: a
checkpoint file is data, never code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillbench import faults
from distillbench.errors import UserError
from distillbench.storage import storage_error

log = logging.getLogger(__name__)

# A run directory's checkpoints: <run_dir>/checkpoints/{last,prev}.pt
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
PREVIOUS = "prev.pt"
CHECKPOINT_NAMES = (LAST, PREVIOUS)
# Marks a file as a distillbench training checkpoint (RepDistiller's files also hold an 'epoch').
CHECKPOINT_FORMAT = "distillbench-training-checkpoint-1"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used, with what to do about it in the message."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(obj: Any, tmp: Path) -> None:
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        faults.reached("write", tmp)
        os.fsync(f.fileno())


def save_atomic(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` so that ``path`` is always either the old or the new file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_synced(obj, tmp)
        faults.reached("rename", path)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise storage_error(path, err) from err
    _fsync_dir(path.parent)


class NonFiniteStateError(ValueError):
    """A tensor of the state to checkpoint is NaN or Inf; ``name`` says which."""

    def __init__(self, name: str):
        super().__init__(f"'{name}' holds NaN or Inf values")
        self.name = name


def first_non_finite(state: Any, prefix: str = "") -> str | None:
    """The dotted name of the first floating-point tensor in ``state`` holding NaN or Inf, or None."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and not bool(torch.isfinite(state).all()):
            return prefix or "tensor"
        return None
    if isinstance(state, Mapping):
        items = state.items()
    elif isinstance(state, list | tuple):
        items = enumerate(state)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def is_training_checkpoint(state: Any, identity: str | None = None) -> bool:
    """A distillbench training checkpoint, of the run with ``identity`` when one is given."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "epoch" not in state:
        return False
    return identity is None or state.get("identity") in (None, identity)


def _usable(path: Path, identity: str | None) -> bool:
    try:
        return is_training_checkpoint(load_file(path), identity)
    except CheckpointError:
        return False


def save_training_checkpoint(state: dict, directory: Path) -> Path:
    """Write ``last.pt``; the checkpoint it replaces survives as ``prev.pt`` until then.

    Only a finite state is written (``NonFiniteStateError`` otherwise: parameters, BN statistics,
    optimiser and distiller state alike), and ``last.pt`` becomes ``prev.pt`` only after it has been
    read back as a checkpoint of this run: a corrupt or foreign ``last.pt`` is dropped instead, so it
    can never push a good ``prev.pt`` out.
    """
    bad = first_non_finite(state)
    if bad is not None:
        raise NonFiniteStateError(bad)
    directory = Path(directory)
    state = {**state, "format": CHECKPOINT_FORMAT}
    tmp = directory / (LAST + ".tmp")
    last = directory / LAST
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_synced(state, tmp)
        if last.exists():
            faults.reached("rotate", last)
            if _usable(last, state.get("identity")):
                os.replace(last, directory / PREVIOUS)
            else:
                log.warning("%s is unreadable or not a checkpoint of this run; it is replaced without becoming "
                            "%s, which keeps the last good checkpoint.", last, PREVIOUS)
        faults.reached("rename", last)
        os.replace(tmp, last)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise storage_error(last, err) from err
    _fsync_dir(directory)
    return last


def load_file(path: Path) -> dict:
    """``torch.load`` with ``weights_only=True`` and an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"Checkpoint '{path}' cannot be read ({type(err).__name__}: {err}). It is truncated, corrupt, "
            "or not a PyTorch checkpoint."
        ) from err


def load_training_checkpoint(directory: Path, identity: str | None = None) -> dict | None:
    """The newest usable checkpoint in ``directory`` (of the run with ``identity``), or None when
    there is none at all. An unreadable or foreign ``last.pt`` falls back to ``prev.pt`` with a warning."""
    directory = Path(directory)
    candidates = [directory / LAST, directory / PREVIOUS]
    existing = [c for c in candidates if c.is_file()]
    if not existing:
        return None
    errors = []
    for path in existing:
        try:
            state = load_file(path)
        except CheckpointError as err:
            log.warning("%s Falling back to the previous checkpoint.", err)
            errors.append(str(err))
            continue
        if not is_training_checkpoint(state, identity):
            message = f"'{path}' is not a distillbench training checkpoint of this run."
            log.warning("%s Falling back to the previous checkpoint.", message)
            errors.append(message)
            continue
        return state
    raise CheckpointError(
        "No usable checkpoint in " + f"'{directory}': " + " ".join(errors)
        + " Nothing was changed. Start the run again with overwrite=true, or move the run directory aside."
    )


def extract_state_dict(checkpoint: Mapping) -> Mapping[str, torch.Tensor]:
    """Model weights from the formats teachers come in.

    RepDistiller, mdistiller and distillbench save ``{'model': state_dict, ...}``; a bare
    state dict is accepted too, and a ``module.`` prefix left by DataParallel is removed.
    """
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            "The checkpoint holds no model weights: expected {'model': state_dict} (RepDistiller, mdistiller, "
            "distillbench) or a bare state_dict."
        )
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_model_weights(model: nn.Module, path: Path, arch: str,
                       fields: str = "teacher.arch and dataset.num_classes") -> None:
    """Load a checkpoint into ``model``, saying exactly which keys or shapes differ.

    ``fields`` names the config values that chose the architecture, for the error message.
    """
    state = extract_state_dict(load_file(path))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} shape(s) differ, e.g. " + "; ".join(wrong_shape[:5]))
        if missing:
            parts.append(f"{len(missing)} key(s) missing from the checkpoint, e.g. " + ", ".join(missing[:5]))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. " + ", ".join(unexpected[:5]))
        raise CheckpointError(
            f"Checkpoint '{path}' does not fit architecture '{arch}' with {_num_classes(expected)} classes: "
            + ". ".join(parts)
            + f". Check that {fields} match the checkpoint."
        )
    model.load_state_dict(state)


def _num_classes(state: Mapping[str, torch.Tensor]) -> str:
    last_weight = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return str(last_weight[-1].shape[0]) if last_weight else "?"
