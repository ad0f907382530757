"""`CheckpointError`, the base of every error about a file the program reads or writes (checkpoints,
backbone files, zoo indexes and downloads).

It lives alone, without torch, so that code which only reads text (`sslp zoo list`) can raise and catch
it without importing the checkpoint machinery; `checkpoint.io` re-exports it.
"""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and what to do."""
