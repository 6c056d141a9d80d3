"""Stream a URL to a file, with a progress bar, the sha256 computed on the way."""

from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from distillbench.teachers.errors import DownloadFailed

CHUNK = 1 << 20
TIMEOUT_S = 60


def download(url: str, target: Path, progress: bool = True) -> tuple[str, int]:
    """Write ``url``'s body to ``target``; returns its sha256 and size. Any failure, a transfer shorter than the
    announced length included, raises ``DownloadFailed`` with the reason (the partial file is left to the caller)."""
    request = urllib.request.Request(url, headers={"User-Agent": "distillbench-fetch-teachers"})
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=Path(url).name,
                      disable=None if progress else True, file=sys.stderr) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise DownloadFailed(f"the server answered HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DownloadFailed(str(err.reason)) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
        raise DownloadFailed(f"{type(err).__name__}: {err}") from None
    if total is not None and size != total:
        raise DownloadFailed(f"the transfer stopped after {size} of {total} bytes")
    return digest.hexdigest(), size
