"""Run directories: one identity per directory, ever; one writer at a time; what ran, on record.

A run directory holds:

* ``run.json``: the run's record, written once when the run starts: experiment, variant, the
  command-line overrides, the identity and its fields, every ``auto`` as decided (device,
  precision, loader, ...), the data's provenance, package versions, code revision and host.
* ``config.yaml``: the composed config as given (interpolations resolved, ``auto`` kept).
* ``sessions.jsonl``: one line per start or resume: when, where, with which code and overrides.
* ``.lock`` while a process writes to it.

``claim_run_dir`` decides, before anything is written, whether this command may use the
directory: a fresh start needs an empty directory, ``resume=true`` needs the same identity, and
``overwrite=true`` replaces the old run only once the new config has been built. A fresh start in
a directory that already holds the same identity, finished, is ``FinishedRun``: there is nothing
to train, and its results stand (the command line reports them instead of failing).
"""

from __future__ import annotations

import datetime as dt
import errno
import functools
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillbench.engine.checkpoint import CHECKPOINT_DIR, CHECKPOINT_NAMES
from distillbench.errors import ResumeMismatchError, RunDirError
from distillbench.identity import differences, group_hash, identity_fields, identity_hash
from distillbench.loggers.files import SUMMARY_FILE
from distillbench.storage import append_line, storage_error, write_text_atomic

log = logging.getLogger("distillbench")

RECORD_FILE = "run.json"
CONFIG_FILE = "config.yaml"
SESSIONS_FILE = "sessions.jsonl"
LOCK_FILE = ".lock"
RECORD_FORMAT = 1


@dataclass
class RunPlan:
    """Who a run is, decided before anything is written."""

    run_dir: Path
    experiment: str
    variant: str
    seed: int
    config: dict[str, Any]  # the composed config, interpolations resolved
    resolved: dict[str, Any]  # every auto as decided, plus facts such as the teacher's weight checksum
    overrides: list[str] = field(default_factory=list)  # the command line's overrides, as typed
    variant_overrides: list[str] = field(default_factory=list)  # those of them that can change the result
    data: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def fields(self) -> dict[str, Any]:
        return identity_fields(self.config, self.resolved)

    @functools.cached_property
    def identity(self) -> str:
        return identity_hash(self.fields)

    @functools.cached_property
    def group(self) -> str:
        return group_hash(self.fields)

    def record(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "experiment": self.experiment,
            "variant": self.variant,
            "seed": self.seed,
            "identity": self.identity,
            "group": self.group,
            "overrides": self.variant_overrides,
            "command_overrides": self.overrides,
            "resolved": self.resolved,
            "data": self.data,
            "identity_fields": self.fields,
            "environment": environment(),
            "created": _now(),
        }


# ------------------------------------------------------------------------ environment
def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_revision() -> dict[str, Any]:
    """The git commit of the distillbench checkout and whether it has uncommitted changes
    (``None`` when distillbench is not run from a git checkout, e.g. a wheel)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


@functools.lru_cache(maxsize=1)
def _environment() -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    cuda = torch.cuda.is_available()
    return {
        "distillbench": version("distillbench"),
        **{f"git_{k}": v for k, v in code_revision().items()},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        **{name: version(name) for name in ("torchvision", "hydra-core", "omegaconf", "timm", "numpy", "wandb")},
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }


def environment() -> dict[str, Any]:
    """Package versions, accelerator, code revision and host of this process (read once per process)."""
    return dict(_environment())


# ------------------------------------------------------------------------------ files
def read_record(run_dir: Path) -> dict | None:
    path = Path(run_dir) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunDirError(
            f"The run record {path} cannot be read ({err}). Without it the run's identity is unknown, so "
            "resume is refused. Move the run directory aside, or pass overwrite=true to start it again."
        ) from err
    return record


# ------------------------------------------------------------------------------- lock
class RunLock:
    """One writer per run directory: an exclusive ``flock`` on ``.lock``, released by the kernel
    when the process dies, and the holder's host, pid and start time inside for the error message.

    A lock file left by a dead process (the flock is free but the file is there) is stale: it is
    taken over with a warning that says whose it was.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        self.created = False

    def acquire(self) -> RunLock:
        import fcntl

        self.created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = self._holder(fd)
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise storage_error(self.path, err) from err
            raise RunDirError(
                f"Another process is writing to {self.path.parent} ({holder}). One run directory has one writer: "
                "wait for it to finish, or stop it first. If that process is gone and this message persists, the "
                f"lock is held on another host sharing this file system; remove {self.path} once you are sure."
            ) from None
        previous = self._holder(fd)
        if previous != "unknown holder" and not self.created:
            log.warning("A stale lock was found in %s (%s): that process ended without releasing it, probably "
                        "killed; taking it over.", self.path.parent, previous)
        os.ftruncate(fd, 0)
        info = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now()}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        except (OSError, ValueError):
            info = None
        if not isinstance(info, dict):
            return "unknown holder"
        return f"pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}"

    def release(self, remove: bool = True) -> None:
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


# ------------------------------------------------------------------------------ claim
class FinishedRun(RunDirError):
    """The run directory already holds this very run (the same identity), finished: nothing is changed.

    Raised instead of starting the run again. Whoever asked for the run may take ``summary`` as its
    result (the command line does, with one line saying so); to others it is a refusal like any other.
    """

    def __init__(self, run_dir: Path, identity: str | None):
        self.run_dir, self.identity = Path(run_dir), identity
        super().__init__(
            f"The run directory {self.run_dir} already holds a finished run with this identity ({identity}); "
            "nothing was changed and its results stand. To train it again pass overwrite=true, or choose another "
            "seed."
        )

    @functools.cached_property
    def summary(self) -> dict[str, Any]:
        """The finished run's ``summary.json`` (empty where this process cannot read it)."""
        try:
            return json.loads((self.run_dir / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            return {}


def _state(run_dir: Path) -> dict[str, bool]:
    checkpoints = run_dir / CHECKPOINT_DIR
    return {
        "finished": (run_dir / SUMMARY_FILE).exists(),
        "checkpoint": any((checkpoints / n).exists() for n in CHECKPOINT_NAMES),
        "record": (run_dir / RECORD_FILE).exists(),
    }


def _check_may_use(plan: RunPlan, resume: bool, overwrite: bool) -> dict | None:
    """Raise unless this command may use ``plan.run_dir``; the stored record when resuming."""
    run_dir = plan.run_dir
    state = _state(run_dir)
    record = read_record(run_dir) if state["record"] and not overwrite else None
    if overwrite:
        return None
    if record is not None and record.get("identity") != plan.identity:
        diffs = differences(record.get("identity_fields", {}), plan.fields)
        shown = "; ".join(diffs[:12]) + (f"; and {len(diffs) - 12} more" if len(diffs) > 12 else "")
        what = "resume" if resume else "start"
        raise ResumeMismatchError(
            f"Cannot {what} in {run_dir}: it holds the run with identity {record.get('identity')}, and this command "
            f"asks for identity {plan.identity}. Differences (stored -> requested): {shown or 'none recorded'}. "
            "Nothing was changed. A run directory holds one config, ever: undo the change to continue the stored "
            "run, run the new config under its own name (its overrides give it its own directory), or pass "
            "overwrite=true to discard the stored run."
        )
    if resume:
        if state["checkpoint"] and record is None:
            raise RunDirError(
                f"{run_dir} holds checkpoints but no run record ({RECORD_FILE}): it was written by an older "
                "distillbench or by hand, so whether this config matches it is unknown and resume is refused. "
                "Nothing was changed. Pass overwrite=true to start again, or move the directory aside."
            )
        if state["finished"] and record is not None:  # a requeue after the end: the result stands
            raise FinishedRun(run_dir, plan.identity)
        if state["finished"]:
            raise RunDirError(
                f"The run in {run_dir} is finished (summary.json); there is nothing to resume. Nothing was changed. "
                "Its results stay; pass overwrite=true to train it again from scratch."
            )
        return record
    if state["finished"] and record is not None:  # the same identity: checked above
        raise FinishedRun(run_dir, plan.identity)
    if state["finished"]:
        raise RunDirError(
            f"The run directory {run_dir} already holds a finished run (see {run_dir / 'summary.json'}) without a "
            f"run record ({RECORD_FILE}), so whether it is this config's is unknown. Nothing was changed. Choose "
            "another seed or name, or pass overwrite=true to replace it."
        )
    if state["checkpoint"]:
        raise RunDirError(
            f"The run directory {run_dir} holds an unfinished run (checkpoints in {run_dir / 'checkpoints'}). "
            "Pass resume=true to continue it, or overwrite=true to start it again from scratch."
        )
    return record


def _clear(run_dir: Path, keep: str) -> None:
    """Remove everything in ``run_dir`` except ``keep`` (the lock this process holds)."""
    for entry in run_dir.iterdir():
        if entry.name == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def claim_run_dir(plan: RunPlan, resume: bool, overwrite: bool) -> RunLock:
    """Take ``plan.run_dir`` for this run, or raise a ``RunDirError`` having changed nothing.

    Order matters: the lock first (a second writer is refused before it reads a half-written
    state), then the checks, and only then any change on disk.
    """
    run_dir = plan.run_dir
    existed = run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(run_dir, err) from err
    try:
        lock = RunLock(run_dir).acquire()
    except OSError as err:
        raise storage_error(run_dir / LOCK_FILE, err) from err
    try:
        record = _check_may_use(plan, resume, overwrite)
        if overwrite:
            _clear(run_dir, keep=LOCK_FILE)
            log.info("overwrite=true: removed the previous run in %s", run_dir)
        _write_records(plan, record, resume)
    except BaseException:
        lock.release(remove=lock.created)
        if not existed:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return lock


def _write_records(plan: RunPlan, record: dict | None, resume: bool) -> None:
    run_dir = plan.run_dir
    if record is None:
        write_text_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(plan.config, sort_keys=False))
        write_text_atomic(run_dir / RECORD_FILE, json.dumps(plan.record(), indent=2, default=str) + "\n")
    else:
        stored = record.get("environment", {}).get("git_commit")
        now = code_revision()["commit"]
        if stored and now and stored != now:
            log.warning("This run started at code revision %s and continues at %s; sessions.jsonl records both.",
                        stored[:12], now[:12])
    session = {"started": _now(), "resume": record is not None, "overrides": plan.overrides,
               "environment": environment()}
    append_line(run_dir / SESSIONS_FILE, json.dumps(session, default=str))
