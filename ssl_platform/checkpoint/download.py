"""Downloads that resume, are checked against a sha256 before anyone may use them, and land atomically.

`fetch_verified(url, dest, sha256)` streams into `dest.part`, resuming with an HTTP `Range` request
when a partial file is left from an interrupted try, recomputes the full sha256 of the finished
file, and only then renames it to `dest`. A file whose hash differs is deleted: a server serving
other bytes than the zoo's index records is either corrupt or tampered with, and nothing of it may be
loaded. An exclusive lock on `dest.lock` lets several processes (e.g. the ranks of a `torchrun`
evaluation) ask for the same file: one downloads, the others find it done.

`torch.hub.load_state_dict_from_url` cannot serve here: it reads files with `torch.load`, not
safetensors, checks only a hash prefix, and does not resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from ssl_platform.checkpoint.io import CheckpointError
from ssl_platform.evaluation.report import file_sha256

CHUNK_BYTES = 1 << 20
USER_AGENT = "ssl_platform-zoo/1"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(CheckpointError):
    """A file cannot be fetched (network, HTTP status); the message names the URL and what to do."""


class IntegrityError(CheckpointError):
    """A file's sha256 is not the one recorded for it; the message names the file and both hashes."""


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the duration of the block.

    flock, not a lock-file-exists check: the kernel releases it if the holder dies mid-download.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open(url: str, start: int, timeout: float):
    """urlopen with a Range header from byte `start`; None when the server says the range is past the end."""
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # Range Not Satisfiable: the partial file is already whole (or too long)
            return None
        raise DownloadError(
            f"{url} answered HTTP {err.code} {err.reason}; check the zoo URL (--zoo or SSL_PLATFORM_ZOO) and "
            "that the file was uploaded next to its index.json"
        ) from err
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"cannot reach {url} ({reason}); check the network and the zoo URL, or use a local zoo directory "
            "(--zoo DIR). A partial download is kept and resumes on the next try."
        ) from err


def _resume_offset(response, start: int) -> int:
    """Where the response's body starts in the file: `start` for a matching 206, else 0 (full body)."""
    if not start or response.status != 206:
        return 0  # the server ignored Range and sends the whole file: start over
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return start if match and int(match.group(1)) == start else 0


def _stream(url: str, part: Path, size: int | None, timeout: float) -> None:
    """Append the rest of `url` to `part` (or rewrite it if the server cannot resume)."""
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:  # longer than the real file: it cannot be a prefix of it
        part.unlink()
        start = 0
    if size is not None and start == size:
        return  # complete already; the hash decides whether it is right
    response = _open(url, start, timeout)
    if response is None:
        return
    with response:
        offset = _resume_offset(response, start)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else size
        with part.open("ab" if offset else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=part.name.removesuffix(".part"),
            file=sys.stderr, disable=None, leave=False,
        ) as bar:
            try:
                while chunk := response.read(CHUNK_BYTES):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (OSError, TimeoutError) as err:  # cut mid-stream: keep what arrived for the next try
                raise DownloadError(
                    f"the download of {url} broke off after {f.tell()} bytes ({err}); run the same command "
                    f"again to resume it from {part}"
                ) from err
            f.flush()
            os.fsync(f.fileno())


def fetch_verified(url: str, dest: str | Path, sha256: str, size: int | None = None, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` unless `dest` already holds a file with this sha256; return `dest`.

    Args:
        url: http(s) URL of the file.
        dest: where the verified file ends up; `dest.part` holds a partial download in between.
        sha256: the full hex digest the file must have.
        size: the expected size in bytes, if known (a longer partial file is discarded).
        timeout: seconds without progress before a connection is given up.

    Raises:
        DownloadError: the URL cannot be fetched; a partial file is kept to resume from.
        IntegrityError: the downloaded bytes have another sha256; nothing is kept.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with file_lock(dest.with_name(dest.name + ".lock")):
        if dest.exists():
            actual = file_sha256(dest)
            if actual == sha256:
                return dest  # cached, or another process finished it while we waited for the lock
            print(f"[ssl_platform] {dest} has sha256 {actual}, not {sha256}: the cached copy is corrupt; "
                  "deleted, downloading it again", file=sys.stderr)
            dest.unlink()
        resumed = part.exists()
        _stream(url, part, size, timeout)
        actual = file_sha256(part)
        if actual != sha256 and resumed:  # a stale or damaged partial file: one clean try from byte 0
            part.unlink()
            _stream(url, part, size, timeout)
            actual = file_sha256(part)
        if actual != sha256:
            got = part.stat().st_size
            part.unlink()
            raise IntegrityError(
                f"{url} has sha256 {actual} ({got} bytes), but the zoo's index.json records {sha256}"
                + (f" ({size} bytes)" if size is not None else "")
                + ". The file on the server is corrupt or was tampered with; the download was deleted and "
                "nothing was loaded. Tell the zoo's maintainer, or re-publish the model with `sslp zoo publish`."
            )
        os.replace(part, dest)
    return dest
