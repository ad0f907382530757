"""A checkpoint save that fails for lack of space stops the run with one clear message and keeps the
previous `last.pt` whole and loadable, with no temp file left behind.

The full disk is a file-size limit (RLIMIT_FSIZE) in the child process, with SIGXFSZ ignored so that
the write fails with EFBIG as a full disk's fails with ENOSPC.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_platform.checkpoint.io import load_checkpoint
from ssl_platform.cli import main

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 1 << 20  # 1 MiB: room for the logs, not for a checkpoint (about 6 MB)


def limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # ignored dispositions survive exec
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


@pytest.mark.slow
def test_failed_save_names_the_file_and_keeps_the_previous_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), "train.save_every_steps=3", f"train.out_dir={out}"]
    assert main([*args, "train.max_steps=3"]) == 0  # here: only the second run needs the file-size limit
    last = out / "checkpoints" / "last.pt"
    before = hashlib.sha256(last.read_bytes()).hexdigest()

    full = subprocess.run([sys.executable, "-m", "ssl_platform", *args, "train.max_steps=6"], cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
                          check=False, preexec_fn=limit_file_size)
    assert full.returncode == 2, full.stderr
    assert (f"error: could not save {last} at step 6: File too large; the checkpoint of step 3 is kept. "
            "Free space on that disk") in full.stderr
    assert "Traceback" not in full.stderr
    assert hashlib.sha256(last.read_bytes()).hexdigest() == before
    assert load_checkpoint(last)["step"] == 3
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name == ".sslp.lock"]
