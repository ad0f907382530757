"""The temp files of saves that were killed mid-write are removed when the run starts again; every
other file in the run directory is kept.

Before issue 21 each killed save left a `.last.pt.<random>.tmp` of up to a checkpoint's size behind,
for good.
"""

from __future__ import annotations

import os
import tempfile

from toy_run import train


def leftover(directory, name):
    """A temp file exactly as `write_atomic` names it, as a save killed before its rename leaves it."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.write(fd, b"half a checkpoint")
    os.close(fd)
    return path


def test_leftover_temp_files_are_removed_at_start_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "run"
    train(out, max_steps=2)
    stale = [leftover(out / "checkpoints", "last.pt"), leftover(out, "config.yaml"), leftover(out, "metrics.jsonl")]
    keep = [out / "notes.tmp", out / ".hidden.tmp", out / "checkpoints" / "epoch1.pt"]  # not write_atomic's names
    for path in keep:
        path.write_text("the user's")

    _, result = train(out, max_steps=4)
    assert result["step"] == 4
    assert not any(os.path.exists(p) for p in stale)
    assert all(p.read_text() == "the user's" for p in keep)
    printed = capsys.readouterr().out
    assert all(f"removed {p}, the temp file of a save that was interrupted" in printed for p in stale)
