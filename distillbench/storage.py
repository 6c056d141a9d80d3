"""Files that are whole or absent: every write of a run goes through here (or ``engine.checkpoint`` for
tensors) and passes ``distillbench.faults``' write points.

A file is replaced as new file, fsync, rename; a line is appended and synced. A full or read-only disk ends
in one ``RunDirError`` naming the file, the previous file intact.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from distillbench import faults
from distillbench.errors import RunDirError


def write_text_atomic(path: Path, text: str) -> None:
    """``path`` is the old file or the new one, never a mix (new file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            faults.reached("write", tmp)
            os.fsync(f.fileno())
        faults.reached("rename", path)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise storage_error(path, err) from err


def storage_error(path: Path, err: OSError) -> RunDirError:
    """Disk full, read-only or forbidden: one paragraph that says which file and what to do."""
    why = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
           errno.EACCES: "permission is denied", errno.EDQUOT: "the disk quota is exceeded"}.get(
        err.errno, err.strerror or str(err))
    return RunDirError(
        f"Cannot write {path}: {why}. The previous files in {Path(path).parent} are intact; free space or fix the "
        "permissions, then continue the run with resume=true (or point paths.runs at a writable disk)."
    )


def append_line(path: Path, line: str) -> None:
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            faults.reached("append", path)
            os.fsync(f.fileno())
    except OSError as err:
        raise storage_error(path, err) from err


def file_digest(path: Path, algorithm: str, chunk_size: int = 1 << 20) -> str:
    """The hex digest (``md5``, ``sha256``, ...) of a file, read in chunks so that it is never held in memory
    whole; a checksum against corruption, not a security measure."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
