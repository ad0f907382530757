"""Where a result came from: the code's git commit and a file's sha256.

The bottom layer (it imports nothing of ssl_platform): result rows, run directories, zoo entries and
downloads all name the code and the weights they came from with these two functions.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path


@functools.cache
def git_sha(path: str | Path | None = None) -> str:
    """The commit of the checkout holding `path` (default: this package), `-dirty` if tracked files changed.

    Returns "unknown" when git is missing, `path` is not in a checkout, or `path` is not tracked there
    (e.g. the package was pip-installed into an ignored .venv inside some repository: that repository's
    HEAD would name the wrong code). Cached per `path`: call `git_sha.cache_clear()` after a commit.
    """
    cwd = Path(__file__).resolve().parent if path is None else Path(path)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        head = git("rev-parse", "--verify", "HEAD")
        if not git("ls-files", "--", "."):
            return "unknown"
        # the whole checkout, not just the package: suites and recipes change results too
        dirty = git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):  # no git binary, not a checkout, no commit yet, hung
        return "unknown"
    return head + ("-dirty" if dirty else "")


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks so large checkpoints need little memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
