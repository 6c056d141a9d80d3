"""The checksums of the teachers a destination holds, kept beside them in ``MANIFEST.json``.

No checksum of the released files is published, so the sha256 of each file is recorded the first time
it is fetched (trust on first use) and every later run checks the files against the record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from distillbench.storage import file_digest
from distillbench.teachers.errors import TeachersError

MANIFEST_NAME = "MANIFEST.json"


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


@dataclass
class Manifest:
    """``files``: path under the destination -> {"sha256", "bytes", "origin"}; ``archive``: the archive last
    unpacked here (name, url, sha256, bytes)."""

    files: dict[str, dict] = field(default_factory=dict)
    archive: dict | None = None

    @classmethod
    def read(cls, dest: Path) -> Manifest:
        path = Path(dest) / MANIFEST_NAME
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            return cls(files=dict(data["files"]), archive=data.get("archive"))
        except (ValueError, KeyError, TypeError) as err:
            raise TeachersError(
                f"{path} cannot be read ({err}). It records the sha256 of the teachers in {path.parent}; delete it "
                "to record them again from the next download."
            ) from None

    def write(self, dest: Path) -> Path:
        path = Path(dest) / MANIFEST_NAME
        data = {
            "about": "sha256 of the teacher files, recorded when first fetched and checked on every later run "
                     "(no checksums are published for the released teachers)",
            "archive": self.archive,
            "files": dict(sorted(self.files.items())),
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
        return path
