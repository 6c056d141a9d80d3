"""Read the teachers' tar archive without trusting it: every member is checked before any is written.

Only regular files under ``cifar_teachers/`` are accepted, at paths that stay inside the destination; a
link, a device, an absolute path, a ``..`` or a member outside that folder refuses the whole archive.
Members are copied out by streaming (``extractfile``), never with ``tarfile``'s own extraction.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from distillbench.teachers.errors import TeachersError
from distillbench.teachers.release import ARCHIVE_FOLDER, ARCHIVE_NAME

CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    """A regular file of the archive: its path under ARCHIVE_FOLDER (the path under the destination)."""

    relpath: str
    size: int
    info: tarfile.TarInfo


def member_relpath(name: str) -> str | None:
    """The path of ``name`` under ARCHIVE_FOLDER when it is a safe relative path there; None otherwise."""
    if "\\" in name or name.startswith("/"):
        return None
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    if len(parts) < 1 or parts[0] != ARCHIVE_FOLDER or any(part == ".." for part in parts):
        return None
    return "/".join(parts[1:])


def _check(info: tarfile.TarInfo) -> str | None:
    """Why ``info`` is refused, or None when it is acceptable."""
    relpath = member_relpath(info.name)
    if relpath is None:
        return f"'{info.name}' lies outside {ARCHIVE_FOLDER}/"
    if info.isdir():
        return None
    if not info.isfile():
        return f"'{info.name}' is not a regular file (a link or a device)"
    if not relpath:
        return f"'{info.name}' is not a file inside {ARCHIVE_FOLDER}/"
    return None


@contextmanager
def open_archive(path: Path) -> Iterator[tuple[tarfile.TarFile, list[Member]]]:
    """The open archive and its files, after every member passed the checks (``TeachersError`` otherwise)."""
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise TeachersError(
            f"{path} is not a readable tar archive ({err}). Download {ARCHIVE_NAME} again; a transfer "
            "cut short leaves a truncated file."
        ) from None
    with tar:
        try:
            infos = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise TeachersError(
                f"{path} is a damaged tar archive ({err}). Download {ARCHIVE_NAME} again."
            ) from None
        refused = [reason for reason in map(_check, infos) if reason]
        if refused:
            raise TeachersError(
                f"{path} was refused and nothing was unpacked: " + "; ".join(refused[:5])
                + (f" (and {len(refused) - 5} more)" if len(refused) > 5 else "")
                + f". The teachers' archive holds only files under {ARCHIVE_FOLDER}/; this one is not it, or was "
                "altered. Download it again from the release page."
            )
        files = [Member(member_relpath(i.name), i.size, i) for i in infos if i.isfile()]
        twice = sorted(relpath for relpath, n in Counter(m.relpath for m in files).items() if n > 1)
        if twice:
            raise TeachersError(f"{path} was refused: it holds {', '.join(twice)} more than once.")
        if not files:
            raise TeachersError(f"{path} holds no files under {ARCHIVE_FOLDER}/: it is not the teachers' archive.")
        yield tar, files


def copy_member(tar: tarfile.TarFile, member: Member, target: Path) -> str:
    """Write ``member``'s bytes to ``target``; returns their sha256."""
    digest = hashlib.sha256()
    source = tar.extractfile(member.info)
    if source is None:  # cannot happen for a regular file; kept as a guard
        raise TeachersError(f"'{member.info.name}' cannot be read from the archive.")
    with source, open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()
