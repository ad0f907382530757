"""Downloads that resume, are checked against a sha256 before anyone may use them, and land atomically.

`fetch_verified(url, dest, sha256, size)` streams into `dest.part`, resuming with an HTTP `Range`
request when a partial file is left from an interrupted try, recomputes the full sha256 of the
finished file, and only then renames it to `dest`. A file whose hash differs is deleted: a server
serving other bytes than the zoo's index records is either corrupt or tampered with, and nothing of it
may be loaded. An exclusive lock on `dest.lock` lets several processes (e.g. the ranks of a `torchrun`
evaluation) ask for the same file: one downloads, the others find it done.

The URL and the size come from an index.json that anyone may have written, so:
  - only http(s) is spoken, redirects included: urlopen would also read `file://`, `ftp://` and `data:`
    URLs, and follows redirects to `ftp://` on its own;
  - no more than `size` bytes are read: a larger Content-Length is refused before the body, and a
    body that runs past it is cut off and deleted;
  - `dest`, `dest.part` and `dest.lock` are written, replaced or deleted only when they are plain
    files: a symbolic link there is refused, never followed (the caller keeps `dest` inside the cache).

`torch.hub.load_state_dict_from_url` cannot serve here: it reads files with `torch.load`, not
safetensors, checks only a hash prefix, and does not resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import re
import stat
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from ssl_platform.checkpoint.errors import CheckpointError
from ssl_platform.provenance import file_sha256

CHUNK_BYTES = 1 << 20
USER_AGENT = "ssl_platform-zoo/1"
HTTP_SCHEMES = ("http", "https")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(CheckpointError):
    """A file cannot be fetched (network, HTTP status, a URL or redirect that is not http(s), a cache path
    that is not a plain file); the message names the URL or path and what to do."""


class IntegrityError(CheckpointError):
    """A file is not the one recorded for it (another sha256, more bytes); the message names it and both values."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only: urllib's own handler follows `ftp://` too (and refuses `file://`
    with a bare HTTP error that does not say why)."""

    def http_error_302(self, req, fp, code, msg, headers):
        target = urllib.parse.urljoin(req.full_url, headers.get("location") or headers.get("uri") or "")
        if urllib.parse.urlsplit(target).scheme.lower() not in HTTP_SCHEMES:
            fp.close()
            raise DownloadError(
                f"{req.full_url} redirects to {target}, which is refused: only http:// and https:// URLs are "
                "followed. The server or the zoo's index.json is misconfigured or hostile; tell its maintainer"
            )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _http_opener() -> urllib.request.OpenerDirector:
    """urlopen's machinery without its file://, ftp:// and data: handlers (UnknownHandler refuses those)."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(), _HttpOnlyRedirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


_OPENER = _http_opener()


def _check_http(url: str) -> None:
    if urllib.parse.urlsplit(url).scheme.lower() not in HTTP_SCHEMES:
        raise DownloadError(f"{url} is refused: only http:// and https:// URLs are downloaded")


def open_http(url: str, headers: dict[str, str] | None = None, timeout: float = 60.0):
    """`urlopen` for http(s) URLs only, redirects included.

    Raises:
        DownloadError: `url` or a redirect is not http(s).
        OSError: as urlopen (URLError, HTTPError, timeouts).
    """
    _check_http(url)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return _OPENER.open(request, timeout=timeout)


def read_limited(url: str, limit: int, timeout: float = 30.0) -> bytes:
    """The body of an http(s) `url`, refused when it is longer than `limit` bytes.

    Raises:
        DownloadError: a scheme or redirect other than http(s), or more than `limit` bytes (a larger
            Content-Length is refused before the body is read; otherwise reading stops at `limit + 1`).
        OSError: the network or the server failed, as with urlopen.
    """
    too_long = (f"{url} is larger than {limit} bytes ({limit / 2**20:g} MiB), the most accepted for it; it was "
                "refused and nothing was kept. Check the URL (--zoo or SSL_PLATFORM_ZOO)")
    with open_http(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise DownloadError(too_long)
        data = response.read(limit + 1)
    if len(data) > limit:
        raise DownloadError(too_long)
    return data


def _plain_file(path: Path, written_into: bool = False) -> bool:
    """Whether `path` exists; raise if it is not a plain file, which this cache never writes through or deletes.

    A symbolic link (even a dangling one), a directory or a FIFO at a cache path was put there by someone
    else. `written_into`: also refuse a file with other hard links, whose bytes a write would change elsewhere.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        kind = "a symbolic link"
    elif not stat.S_ISREG(st.st_mode):
        kind = "not a plain file"
    elif written_into and st.st_nlink > 1:
        kind = "a hard link to another file"
    else:
        return True
    raise DownloadError(
        f"{path} is {kind}, so the download cache leaves it alone: it only writes and deletes files it "
        "downloaded itself. Remove it (it is in the download cache, not your data) and try again"
    )


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the duration of the block.

    flock, not a lock-file-exists check: the kernel releases it if the holder dies mid-download.
    O_NOFOLLOW: a (dangling) symbolic link in place of the lock file would make open() create its target.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _plain_file(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open(url: str, start: int, timeout: float):
    """A response with a Range header from byte `start`; None when the server says the range is past the end."""
    try:
        return open_http(url, {"Range": f"bytes={start}-"} if start else None, timeout)
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


def _open_part(part: Path, append: bool):
    """`part` for appending or rewriting; O_NOFOLLOW so that a link swapped in since the check is not followed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(part, flags, 0o666), "ab" if append else "wb")


def _stream(url: str, part: Path, size: int, timeout: float) -> None:
    """Append the rest of `url` to `part` (or rewrite it if the server cannot resume), reading at most `size` bytes.

    Raises:
        IntegrityError: the server announces or sends more than `size` bytes; `part` is deleted.
    """
    start = part.stat().st_size if _plain_file(part, written_into=True) else 0
    if start > size:  # longer than the real file: it cannot be a prefix of it
        part.unlink()
        start = 0
    if start == size:
        return  # complete already; the hash decides whether it is right
    response = _open(url, start, timeout)
    if response is None:
        return
    with response:
        offset = _resume_offset(response, start)
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and offset + int(length) > size:
            part.unlink(missing_ok=True)
            raise IntegrityError(
                f"{url} announces {offset + int(length)} bytes (Content-Length {length} from byte {offset}), but "
                f"the zoo's index.json records {size}; refused before reading the body, nothing was kept. The "
                "server or the index is wrong or tampered with: tell the zoo's maintainer"
            )
        written, too_long = offset, False
        with _open_part(part, append=bool(offset)) as f, tqdm(
            total=offset + int(length) if length.isdigit() else size, initial=offset, unit="B", unit_scale=True,
            desc=part.name.removesuffix(".part"), file=sys.stderr, disable=None, leave=False,
        ) as bar:
            try:
                # one byte more than is left, so a longer body shows itself without being read on
                while chunk := response.read(min(CHUNK_BYTES, size - written + 1)):
                    if written + len(chunk) > size:
                        too_long = True
                        break
                    f.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            except (OSError, TimeoutError, http.client.HTTPException) as err:  # cut mid-stream: keep what arrived
                raise DownloadError(
                    f"the download of {url} broke off after {written} bytes ({err}); run the same command "
                    f"again to resume it from {part}"
                ) from err
            f.flush()
            os.fsync(f.fileno())
    if too_long:
        part.unlink()
        raise IntegrityError(
            f"{url} sent more than the {size} bytes the zoo's index.json records for it; the download was stopped "
            "there and deleted, nothing was loaded. The server or the index is wrong or tampered with: tell the "
            "zoo's maintainer"
        )


def fetch_verified(url: str, dest: str | Path, sha256: str, size: int, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` unless `dest` already holds a file with this sha256; return `dest`.

    Args:
        url: http(s) URL of the file.
        dest: where the verified file ends up; `dest.part` holds a partial download in between. The
            caller keeps it inside its cache: this function deletes a `dest` with another hash.
        sha256: the full hex digest the file must have.
        size: the file's size in bytes; no more is read (a longer partial file is discarded).
        timeout: seconds without progress before a connection is given up.

    Raises:
        DownloadError: the URL cannot be fetched (a partial file is kept to resume from), is not http(s),
            or `dest`, `dest.part` or `dest.lock` is a symbolic link or another non-plain file (left alone).
        IntegrityError: the downloaded bytes have another sha256, or more than `size` arrive; nothing is kept.
    """
    _check_http(url)  # before the cache is touched
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with file_lock(dest.with_name(dest.name + ".lock")):
        if _plain_file(dest):
            actual = file_sha256(dest)
            if actual == sha256:
                return dest  # cached, or another process finished it while we waited for the lock
            print(f"[ssl_platform] {dest} has sha256 {actual}, not {sha256}: the cached copy is corrupt; "
                  "deleted, downloading it again", file=sys.stderr)
            dest.unlink()
        resumed = _plain_file(part, written_into=True)
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
                f"{url} has sha256 {actual} ({got} bytes), but the zoo's index.json records {sha256} ({size} bytes)"
                ". The file on the server is corrupt or was tampered with; the download was deleted and "
                "nothing was loaded. Tell the zoo's maintainer, or re-publish the model with `sslp zoo publish`."
            )
        os.replace(part, dest)
    return dest
