"""One run per directory: `hold_run_lock(dir)` keeps a second run from writing into a directory that
a live run is writing into (two runs on one `last.pt` would overwrite each other's checkpoints).

The lock is `<dir>/.sslp.lock`, holding JSON {pid, host, started, argv} so that a refusal can name
the holder. It is a POSIX record lock (`fcntl.lockf`) on that file: the kernel drops it when its
process dies however it dies, so a file left behind by a killed run holds no lock and the next run
takes it over. Not `flock`: an flock belongs to the open file, which forked children (DataLoader
workers) share, so a SIGKILLed run's workers would go on holding it for seconds; a POSIX lock
belongs to the process alone (and works across hosts on NFS). Its one trap: closing *any*
descriptor of the file releases it, so the holder only ever touches the file through its own
descriptor. File systems that cannot lock (some network file systems answer ENOLCK or EOPNOTSUPP)
fall back to creating the file exclusively; there, a file left by a dead process can only be
recognised on its own host, and a file from another host is refused with the advice to delete it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

LOCK_NAME = ".sslp.lock"
# what lockf answers where the file system cannot lock: NFS without lockd, some FUSE and Lustre mounts
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
_held: set[str] = set()  # directories this process holds: holding one again (nested) is a no-op


class RunLockedError(FileExistsError):
    """Another live run holds the directory; the message names it (pid, host, start) and what to do."""


def hold_run_lock(directory: str | Path, what: str = "pretraining run") -> contextlib.AbstractContextManager[Path]:
    """Hold `<directory>/.sslp.lock` for the duration of a `with` block; the file is gone afterwards.

    Released on every exit: normal, exception, and SIGTERM (turned into `SystemExit(143)` while the
    lock is held, where SIGTERM would otherwise kill without cleanup). Holding a directory this
    process already holds is a no-op, so a caller may lock around code that locks again.

    Args:
        directory: the run directory (created if missing).
        what: what the holder is doing, for messages ("pretraining run", "evaluation run").

    Returns:
        a context manager yielding the lock file's path.

    Raises:
        RunLockedError: another live process holds the directory.
    """
    return _hold(Path(directory), what)


@contextlib.contextmanager
def _hold(directory: Path, what: str) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    key = os.path.realpath(directory)
    if key in _held:
        yield path
        return
    fd = _acquire(path, what)
    _held.add(key)
    try:
        with _sigterm_exits():
            yield path
    finally:
        _held.discard(key)
        _release(path, fd)


def _record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"), "argv": sys.argv}


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "a process that has not written its record yet (or an unreadable lock file)"
    argv = " ".join(map(str, holder.get("argv") or []))
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
            + (f" ({argv})" if argv else ""))


def _read(path: Path) -> dict | None:
    """The record of another process's lock file (never call it on a file this process locks)."""
    try:
        return _parse(path.read_bytes())
    except OSError:
        return None


def _read_fd(fd: int) -> dict | None:
    """The record in a file this process has locked, read through its own descriptor (see the docstring)."""
    try:
        return _parse(os.pread(fd, 1 << 16, 0))
    except OSError:
        return None


def _parse(data: bytes) -> dict | None:
    try:
        holder = json.loads(data)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _write(fd: int) -> None:
    data = json.dumps(_record()).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _acquire(path: Path, what: str) -> int:
    """Open, lock and fill in the lock file; return its descriptor (held until `_release`)."""
    while True:
        try:
            fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                fd, created = os.open(path, os.O_RDWR), False
            except FileNotFoundError:  # its holder removed it just now
                continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):  # held by another process
                _no_lock(err, fd)
                if created:  # O_EXCL made the file ours: that is the lock where lockf does not work
                    _write(fd)
                    return fd
                os.close(fd)
                return _acquire_exclusive(path, what)
            os.close(fd)
            holder = _read(path)
            raise RunLockedError(
                f"{path.parent} is in use by another {what}: {_describe(holder)}. Wait for it to finish, stop "
                f"it (`kill {holder.get('pid') if holder else '<pid>'}`: a pretraining run saves a checkpoint "
                "first), or write to another directory."
            ) from None
        # the holder we waited on may have unlinked the file between our open and our lock: then we
        # locked an orphan, and a third process may already hold a new file at this path
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        old = _read_fd(fd)
        if old is not None:
            print(f"[ssl_platform] taking over a stale lock {path} of {_describe(old)}: that process no longer "
                  "holds it", file=sys.stderr, flush=True)
        _write(fd)
        return fd


def _no_lock(err: OSError, fd: int) -> None:
    """Re-raise a locking error other than "this file system cannot lock"."""
    if err.errno not in _NO_FLOCK:
        os.close(fd)
        raise err


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _acquire_exclusive(path: Path, what: str) -> int:
    """The fallback where lockf does not work: whoever creates the file holds the lock."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read(path)
            here = holder is not None and holder.get("host") == socket.gethostname()
            if here and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
                print(f"[ssl_platform] taking over a stale lock {path} of {_describe(holder)}: that process is "
                      "gone", file=sys.stderr, flush=True)
                # two takers racing here could both unlink; the file system offers nothing better
                # without a lock, and the loser then fails on O_EXCL or finds the winner's live pid
                path.unlink(missing_ok=True)
                continue
            gone = "is gone" if here else "is gone (this file system cannot lock, so it cannot be checked from here)"
            raise RunLockedError(
                f"{path.parent} is in use by another {what}: {_describe(holder)}. Wait for it to finish, stop "
                f"it, or write to another directory; if that process {gone}, delete {path}."
            ) from None
        _write(fd)
        return fd


def _release(path: Path, fd: int) -> None:
    # unlink while still holding the lock, then close: a process waiting to lock the old file finds
    # the path gone (or a new inode) and starts over, so it never holds a lock nobody else can see
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) instead of killing outright, so `finally` blocks release the lock.

    Only where SIGTERM still has its default action (the training loop installs its own handler,
    which saves a checkpoint first) and only in the main thread (the only one Python lets set one).
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
