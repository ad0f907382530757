"""Atomic file writes: a crash leaves either the old file or the whole new one, never half.

`write_atomic` (bytes) and `copy_atomic` (a file, streamed) write a temp file beside the target,
fsync it, rename it over the target and fsync the directory. They import no torch, so the zoo's index
and the evaluation reports use them without loading the checkpoint machinery; `checkpoint.io`
re-exports both.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from ssl_platform.checkpoint.errors import CheckpointError


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


# the temp files of `write_atomic` and `copy_atomic` (`.<name>.<mkstemp's 8 characters>.tmp`): what a
# save killed mid-write leaves behind, and all that a run may delete as its own leftovers
ATOMIC_TEMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new temp file in `path`'s directory (a rename is atomic only within one file system)."""
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def _fsync_dir(directory: Path) -> None:
    """fsync a directory, so that a rename into it survives a power cut."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never half.

    Temp file in the same directory (rename is atomic only within a file system), fsync the file,
    rename over the target, then fsync the directory so the rename itself survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
    try:
        # mkstemp makes the file 0600; give it the mode open() would (0666 minus the umask), so a
        # checkpoint or zoo file written here is readable by whoever can read its directory
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def copy_atomic(src: str | Path, dst: str | Path, sha256: str | None = None) -> None:
    """Copy `src` to `dst` through a temp file in `dst`'s directory and a rename: readers see the old file or
    the whole new one, never half (`write_atomic`, streamed for weights files of any size).

    The copy keeps `src`'s permission bits. With `sha256`, the copy's hash is checked before it takes the name.

    Raises:
        CheckpointError: the copy's sha256 is not `sha256` (a failing disk); nothing is left behind.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(dst)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(src, tmp)
        if sha256 is not None:
            digest = hashlib.sha256()
            with open(tmp, "rb") as f:  # the bytes that landed, read back: not the ones handed to the disk
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            if digest.hexdigest() != sha256:
                raise CheckpointError(f"copying {src} to {dst} changed its bytes; check the disk and try again")
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(dst.parent)
