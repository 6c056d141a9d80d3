"""What a distiller needs of the data, read from its config spec before anything is built.

The loaders are made before the distiller exists; ``min_batch_size`` reads the ``min_batch_size`` class
attribute (``Distiller.min_batch_size``) of every class a spec names with ``_target_``, the parts of a
combined method included, so the loaders can leave out a last batch too small for the method.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence


def _class_of(target: str) -> type | None:
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None  # instantiating the spec reports the bad name, with its context


def min_batch_size(spec: object) -> int:
    """The largest ``min_batch_size`` among the classes ``spec`` (a plain dict/list tree) names; 1 if none."""
    need = 1
    if isinstance(spec, Mapping):
        target = spec.get("_target_")
        cls = _class_of(target) if isinstance(target, str) else None
        need = max(need, int(getattr(cls, "min_batch_size", 1)))
        children = spec.values()
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        children = spec
    else:
        return need
    for child in children:
        need = max(need, min_batch_size(child))
    return need
