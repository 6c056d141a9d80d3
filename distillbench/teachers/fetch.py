"""Put the released CIFAR-100 teachers where the teacher configs look for them, verified.

``fetch_teachers(dest)`` leaves each teacher at ``<dest>/<arch>_vanilla/ckpt_epoch_240.pth``, the default
``teacher.checkpoint`` of configs/teacher/*.yaml with ``paths.teachers=<dest>``. Files already there and
matching their recorded (or pinned) sha256 are kept and nothing is downloaded; otherwise the archive is
downloaded (or taken from ``archive``), checked, and unpacked: every member to a temporary file first,
then, once all passed their checks, renamed into place. A file that differs from the released one (a
teacher of one's own) is never replaced without ``force``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distillbench.teachers.archive import copy_member, open_archive
from distillbench.teachers.download import download
from distillbench.teachers.errors import DownloadFailed, TeachersError
from distillbench.teachers.manifest import MANIFEST_NAME, Manifest, file_sha256
from distillbench.teachers.release import (
    ARCHIVE_APPROX_MB,
    ARCHIVE_FOLDER,
    ARCHIVE_NAME,
    ARCHIVE_URL,
    CHECKPOINT_NAME,
    DEAD_SERVER,
    KNOWN_SHA256,
    RELEASE_PAGE,
    RELEASED_ARCHS,
    teacher_relpath,
)

FROM_ARCHIVE = "archive"
FOUND_IN_PLACE = "found in place"


@dataclass(frozen=True)
class Teacher:
    """One teacher file under the destination and what this run did with it."""

    arch: str
    path: Path
    status: str


@dataclass(frozen=True)
class FetchResult:
    dest: Path
    teachers: list[Teacher]
    manifest: Path
    # Released teachers the archive did not hold (none for the published archive).
    absent: list[str]


def arch_of(relpath: str) -> str | None:
    """``resnet32x4`` for ``resnet32x4_vanilla/ckpt_epoch_240.pth``; None for a file that is no teacher."""
    folder, _, name = relpath.partition("/")
    return folder.removesuffix("_vanilla") if folder.endswith("_vanilla") and "/" not in name and name else None


def offline_message(url: str, reason: str, dest: Path) -> str:
    """The one paragraph that tells someone without internet exactly what to fetch and where to put it."""
    mirror = "" if url == ARCHIVE_URL else " (the mirror given with --url)"
    return (
        f"Could not download the CIFAR-100 teachers from {url}{mirror}: {reason}. RepDistiller's original server "
        f"({DEAD_SERVER}<arch>_vanilla/{CHECKPOINT_NAME}, used by its scripts/fetch_pretrained_teachers.sh) is gone; "
        f"the same teachers are published as mdistiller's release asset {ARCHIVE_NAME} (about {ARCHIVE_APPROX_MB} MB) "
        f"at {ARCHIVE_URL} (listed on {RELEASE_PAGE}). On a machine with internet, download {ARCHIVE_NAME}, copy it "
        f"here and run `python scripts/fetch_teachers.py --archive /path/to/{ARCHIVE_NAME}` (or pass --url with a "
        f"mirror); or unpack it yourself so that each teacher lies at {dest}/<arch>_vanilla/{CHECKPOINT_NAME}, e.g. "
        f"{dest}/resnet32x4_vanilla/{CHECKPOINT_NAME} (the archive's {ARCHIVE_FOLDER}/ folder is {dest}), then run "
        "this command again to record their checksums."
    )


def fetch_teachers(dest: Path, url: str = ARCHIVE_URL, archive: Path | None = None, sha256: str | None = None,
                   force: bool = False, progress: bool = True) -> FetchResult:
    """Make every released teacher present and verified under ``dest`` (see the module docstring).

    ``archive``: a ``cifar_teachers.tar`` already downloaded (then ``url`` is not used); ``sha256``: the
    archive's expected sha256. Raises ``TeachersError`` (``DownloadFailed`` offline) with what to do."""
    dest = Path(dest).resolve()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TeachersError(f"Cannot create the teachers folder {dest} ({err.strerror}); pass --dest or set "
                            "paths.teachers to a writable folder.") from None
    manifest = Manifest.read(dest)
    # Complete: every file of the archive unpacked here before, or, before any was, every released teacher.
    wanted = sorted(set(manifest.files) if manifest.archive else
                    {teacher_relpath(arch) for arch in RELEASED_ARCHS} | set(manifest.files))
    present = {rel: file_sha256(dest / rel) for rel in wanted if (dest / rel).is_file()}
    mismatched = [rel for rel, digest in present.items() if _reference(rel, manifest) not in (None, digest)]
    if archive is None and len(present) == len(wanted) and not mismatched:
        return _keep_in_place(dest, manifest, present)

    owned_download = archive is None
    archive_path = dest / f".{ARCHIVE_NAME}.part" if owned_download else Path(archive)
    try:
        archive_info = _obtain_archive(url, archive_path, owned_download, sha256, dest, progress)
        return _unpack(dest, archive_path, archive_info, manifest, present, force)
    except OSError as err:
        raise TeachersError(f"Cannot write the teachers into {dest} ({err.strerror}: {err.filename}); free space "
                            "(the archive and its files need about twice its size while unpacking) or pass --dest "
                            "with another folder.") from None
    finally:
        if owned_download:
            archive_path.unlink(missing_ok=True)


def _reference(relpath: str, manifest: Manifest) -> str | None:
    """The sha256 a file must have: pinned in KNOWN_SHA256, else recorded in the manifest, else unknown."""
    return KNOWN_SHA256.get(relpath) or manifest.files.get(relpath, {}).get("sha256")


def _keep_in_place(dest: Path, manifest: Manifest, present: dict[str, str]) -> FetchResult:
    """Nothing to download: every file is verified, or is recorded now when no checksum was known for it."""
    teachers, recorded = [], False
    for rel, digest in present.items():
        if _reference(rel, manifest) is None:
            manifest.files[rel] = {"sha256": digest, "bytes": (dest / rel).stat().st_size, "origin": FOUND_IN_PLACE}
            status, recorded = "found in place, sha256 recorded (no published checksum to check it against)", True
        else:
            status = "already present, sha256 verified"
        if arch_of(rel):
            teachers.append(Teacher(arch_of(rel), dest / rel, status))
    if not recorded:  # nothing new to record: a read-only shared folder works as well
        return FetchResult(dest, teachers, dest / MANIFEST_NAME, absent=[])
    try:
        written = manifest.write(dest)
    except OSError as err:
        raise TeachersError(f"Cannot record the teachers' sha256 in {dest / MANIFEST_NAME} ({err.strerror}); make "
                            "the folder writable once, or pass --dest with a writable copy.") from None
    return FetchResult(dest, teachers, written, absent=[])


def _obtain_archive(url: str, path: Path, download_it: bool, sha256: str | None, dest: Path,
                    progress: bool) -> dict:
    """Download the archive to ``path`` (or check the given one) and verify it against ``sha256``; returns what
    the manifest records of it."""
    if download_it:
        try:
            digest, size = download(url, path, progress=progress)
        except DownloadFailed as err:
            raise DownloadFailed(offline_message(url, str(err), dest)) from None
        source = f"downloaded from {url}"
    elif not path.is_file():
        raise TeachersError(f"--archive {path} does not exist. Pass the path of the downloaded {ARCHIVE_NAME} "
                            f"({ARCHIVE_URL}).")
    else:
        digest, size, url, source = file_sha256(path), path.stat().st_size, None, str(path)
    if sha256 is not None and digest != sha256.strip().lower():
        raise TeachersError(
            f"The archive {source} has sha256 {digest}, not the expected "
            f"{sha256.strip().lower()} (--sha256): it was refused and nothing was unpacked. Download it again (a "
            "mirror may serve another file), or check the expected checksum."
        )
    return {"name": ARCHIVE_NAME, "url": url, "sha256": digest, "bytes": size}


def _unpack(dest: Path, archive: Path, archive_info: dict, manifest: Manifest, present: dict[str, str],
            force: bool) -> FetchResult:
    staged: dict[str, tuple[Path, str, int]] = {}
    try:
        with open_archive(archive) as (tar, members):
            for member in members:
                target = dest / member.relpath
                if not target.resolve().is_relative_to(dest):  # a folder of dest that is a link pointing out
                    raise TeachersError(f"{target} leads outside {dest} (a symbolic link?); nothing was unpacked.")
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(f".{target.name}.part")
                staged[member.relpath] = (part, copy_member(tar, member, part), member.size)
        _check_against_references(archive, staged, manifest)
        teachers, conflicts = [], []
        for rel, (part, digest, size) in staged.items():
            target = dest / rel
            existing = present.get(rel) or (file_sha256(target) if target.is_file() else None)
            if existing is None:
                part.replace(target)
                status = "unpacked, sha256 " + ("verified" if rel in KNOWN_SHA256 else "recorded")
            elif existing == digest:
                status = "already present, identical to the archive's"
            elif force:
                part.replace(target)
                status = "replaced (--force): the file there differed from the archive's"
            else:
                conflicts.append(str(target))
                status = "kept: differs from the archive's (--force replaces it)"
            manifest.files[rel] = {"sha256": digest, "bytes": size, "origin": FROM_ARCHIVE}
            if arch_of(rel):
                teachers.append(Teacher(arch_of(rel), target, status))
    finally:
        for part, _, _ in staged.values():
            part.unlink(missing_ok=True)
    manifest.archive = archive_info
    written = manifest.write(dest)
    if conflicts:
        raise TeachersError(
            f"{len(conflicts)} file(s) differ from the released teachers and were kept: {', '.join(conflicts)}. "
            "They may be teachers of your own. Move them aside and run again, or pass --force to replace them; "
            f"the other teachers are in place and {written} records the released files' sha256."
        )
    absent = [arch for arch in RELEASED_ARCHS if teacher_relpath(arch) not in staged]
    return FetchResult(dest, sorted(teachers, key=lambda t: t.arch.lower()), written, absent)


def _check_against_references(archive: Path, staged: dict[str, tuple[Path, str, int]], manifest: Manifest) -> None:
    """Every file whose sha256 is pinned, or was recorded from an earlier archive, must match it."""
    refused = []
    for rel, (_, digest, _) in staged.items():
        recorded = manifest.files.get(rel, {})
        expected = KNOWN_SHA256.get(rel) or (recorded.get("sha256") if recorded.get("origin") == FROM_ARCHIVE else None)
        if expected is not None and digest != expected:
            refused.append(f"{rel} has sha256 {digest}, expected {expected}")
    if refused:
        raise TeachersError(
            f"The archive {archive} was refused and nothing was unpacked: " + "; ".join(refused) + ". The expected "
            f"values are pinned in distillbench or were recorded in {MANIFEST_NAME} when these teachers were first "
            "fetched: this archive holds other files. Download it again from the release page; if the release "
            f"itself changed, move {MANIFEST_NAME} and the old teachers aside first."
        )
