"""Training checkpoints that survive a crash mid-write (files are read through ``distillbench.weights``).

A training checkpoint is written to a temporary file, fsynced and renamed over
``last.pt``; the previous one is kept as ``prev.pt`` until then, so a kill at any moment
leaves at least one complete checkpoint. Every load uses ``weights_only=True``: a
checkpoint file is data, never code. Besides tensors, only a few plain-data types that teachers'
files are known to hold are let through (RepDistiller's ``<model>_last.pth`` pickles its argparse
options); any other pickled object is refused with an explanation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from distillbench import faults
from distillbench.storage import storage_error
from distillbench.weights import CheckpointError, load_file

log = logging.getLogger(__name__)

# A run directory's checkpoints: <run_dir>/checkpoints/{last,prev}.pt
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
PREVIOUS = "prev.pt"
CHECKPOINT_NAMES = (LAST, PREVIOUS)
# Marks a file as a distillbench training checkpoint (RepDistiller's files also hold an 'epoch').
CHECKPOINT_FORMAT = "distillbench-training-checkpoint-1"


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
