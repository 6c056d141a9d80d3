"""Reading weights files safely, whoever wrote them, with errors that say what the file is.

Every load uses ``weights_only=True``: a checkpoint file is data, never code. Besides tensors, only a few
plain-data types that teachers' files are known to hold are let through (RepDistiller's ``<model>_last.pth``
pickles its argparse options); any other pickled object is refused with an explanation. The models, the
teacher download and the training checkpoints all read files through here.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distillbench.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used, with what to do about it in the message."""


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
