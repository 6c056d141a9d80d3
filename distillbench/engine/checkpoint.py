"""Checkpoints that survive a crash mid-write, and weight loading that explains mismatches.

A training checkpoint is written to a temporary file, fsynced and renamed over
``last.pt``; the previous one is kept as ``prev.pt`` until then, so a kill at any moment
leaves at least one complete checkpoint. Every load uses ``weights_only=True``: a
checkpoint file is data, never code. Besides tensors, only a few plain-data types that teachers'
files are known to hold are let through (RepDistiller's ``<model>_last.pth`` pickles its argparse
options); any other pickled object is refused with an explanation.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
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
    """``torch.load`` with ``weights_only=True`` and an error that names the file.

    A file refused only for plain data besides its weights (``PLAIN_DATA``: RepDistiller's argparse
    options, numpy numbers) is loaded again with just those types allowed; anything else stays refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_global(err)
        if refused is None:
            raise CheckpointError(_unreadable(path, err)) from err
        return _load_with_plain_data(path, refused)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(_unreadable(path, err)) from err


# What RepDistiller's and mdistiller's files hold besides tensors: RepDistiller's <model>_last.pth pickles
# its argparse options as 'opt'; accuracies saved as numpy numbers pickle numpy's scalar constructor and
# dtypes. All are plain data: unpickling them runs no code of the file's choosing.
PLAIN_DATA = ("argparse options (argparse.Namespace)", "numpy scalars")


def _plain_data_globals() -> list:
    scalar = np.float64(0).__reduce__()[0]  # numpy's scalar constructor, in whichever module this numpy keeps it
    allowed: list = [argparse.Namespace, np.dtype, scalar]
    allowed += [type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"]  # numpy>=1.25 pickles dtypes by class
    if torch.__version__ >= (2, 6):  # aliases by name: files written under numpy 1 (numpy.core) or 2 (numpy._core)
        allowed += [(scalar, f"{module}.multiarray.scalar") for module in ("numpy.core", "numpy._core")]
    return allowed


def _refused_global(err: Exception) -> str | None:
    """The Python object a weights-only load refused, from torch's message; None for other failures."""
    found = re.search(r"(?:GLOBAL|Unsupported class) ([\w.]+)", str(err))
    return found.group(1) if found else None


def _is_plain_data(name: str) -> bool:
    """Whether ``name`` (a global a weights-only load refused) is one of the PLAIN_DATA types."""
    numpy_scalar_or_dtype = name.startswith("numpy.") and (
        name.endswith((".scalar", ".dtype")) or name.startswith("numpy.dtypes."))
    return name == "argparse.Namespace" or numpy_scalar_or_dtype


def _load_with_plain_data(path: Path, refused: str) -> dict:
    if not _is_plain_data(refused):
        raise CheckpointError(_foreign_object(path, refused))
    if not hasattr(torch.serialization, "safe_globals"):
        raise CheckpointError(
            f"Checkpoint '{path}' holds {refused} besides its weights (RepDistiller's <model>_last.pth pickles its "
            f"argparse options), and torch {torch.__version__} cannot load such a "
            "file weights-only with just those types allowed (torch>=2.5 can). Upgrade torch, or keep only the "
            "weights: " + _resave_hint(path)
        )
    try:
        with torch.serialization.safe_globals(_plain_data_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        other = _refused_global(err)
        raise CheckpointError(_unreadable(path, err) if other is None else _foreign_object(path, other)) from err
    except Exception as err:
        raise CheckpointError(_unreadable(path, err)) from err


def _foreign_object(path: Path, name: str) -> str:
    numpy_alias = (" This torch reads numpy scalars only as this numpy names them; torch>=2.6 reads those written "
                   "under the other numpy major version too.") if _is_plain_data(name) else ""
    return (
        f"Checkpoint '{path}' is a PyTorch file that pickles a Python object ({name}) besides its tensors, so it is "
        "not read: distillbench loads checkpoints weights-only, because unpickling an arbitrary object can run code. "
        f"Accepted are tensors, plain containers and numbers, {', '.join(PLAIN_DATA)}.{numpy_alias} If the file "
        "comes from a source you trust, keep only its weights and pass the new file: " + _resave_hint(path)
    )


def _resave_hint(path: Path) -> str:
    out = path.with_name(path.stem + "_weights.pth")
    return (
        f"python -c \"import torch; c = torch.load('{path}', map_location='cpu', weights_only=False); "
        "m = c.get('model', c) if isinstance(c, dict) else c; "
        f"torch.save({{'model': m.state_dict() if hasattr(m, 'state_dict') else m}}, '{out}')\"."
    )


def _unreadable(path: Path, err: Exception) -> str:
    text = str(err)
    # torch's weights-only message suggests weights_only=False first; its specific reason is this line.
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    reason = found.group(1) if found else (text.strip().splitlines() or [""])[0]
    return (
        f"Checkpoint '{path}' cannot be read ({type(err).__name__}: {reason[:200]}). It is truncated, corrupt, "
        "or not a PyTorch checkpoint."
    )


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
