"""Fault injection at every point where distillbench writes a file.

Each write goes through ``reached(point, path)`` at the moment a crash would hurt most: after
the bytes are written but before they are synced (``write``), before a rename makes a new file
current (``rename``), before a checkpoint rotation (``rotate``), after a line is appended
(``append``). Normally this does nothing. The fault suite installs a hook that raises there,
emulating a kill or a full disk at that exact point, and then checks that a resume ends with the
same weights as an uninterrupted run, or stops with a clear message and nothing lost.

From outside a process: ``DISTILLBENCH_FAULT=<point>:<n>`` makes the n-th arrival (1-based,
counted over all points matching ``point``, ``*`` for any) end the process at once with exit code
137, as SIGKILL would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

POINTS = ("write", "rename", "rotate", "append")

Hook = Callable[[str, Path], None]
_hook: Hook | None = None
_env_count = 0


def install(hook: Hook | None) -> Hook | None:
    """Call ``hook(point, path)`` at every write point (None removes it); returns the previous hook."""
    global _hook
    previous, _hook = _hook, hook
    return previous


def reached(point: str, path: str | os.PathLike) -> None:
    """A write point: the installed hook, or the ``DISTILLBENCH_FAULT`` kill switch, may act here."""
    global _env_count
    if _hook is not None:
        _hook(point, Path(path))
    spec = os.environ.get("DISTILLBENCH_FAULT")
    if spec:
        want, _, n = spec.partition(":")
        if want in ("*", point):
            _env_count += 1
            if _env_count == int(n or 1):
                os._exit(137)
