"""Run logs: `metrics.jsonl` (one JSON object per logged step) and TensorBoard scalars, and the
rows the training loop logs (`log_step`: the mean of each 0-d output; `run_monitor`: a monitor's metrics).

Only rank 0 writes. On resume, rows past the checkpoint's step (written by the run that died after
its last checkpoint) are dropped and TensorBoard purges them too, so the logs read as one run.

How each file survives a crash:
  - the truncation on resume rewrites metrics.jsonl atomically (temp file, fsync, rename), and only
    when a row is dropped: a run resumed at its last step leaves the file untouched;
  - each row (far smaller than a page) is appended with a single `write` to a file opened with
    O_APPEND, so a killed process leaves whole rows: the write happens entirely or not at all. A
    power cut (or a full disk) can still tear the last line; the next resume drops a torn last line;
  - TensorBoard's event files are append-only records written by TensorBoard itself and cannot be
    written atomically; a torn record at the end of one is skipped by TensorBoard's reader. The
    writer is created at the first logged row, so a run that logs nothing (a finished run started
    again) opens no new event file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_platform import distributed
from ssl_platform.checkpoint.io import write_atomic


class RunLogger:
    """Append metrics to `<run>/metrics.jsonl` and `<run>/tb/` (rank 0 only; no-op elsewhere).

    Args:
        out_dir: the run directory.
        resume_step: step of the checkpoint being resumed (0 for a fresh run); later rows are removed.
        recipe: the resolved recipe (plain dict) of the run, or None.
    """

    def __init__(self, out_dir: str | Path, resume_step: int = 0, recipe: dict | None = None):
        self.recipe = recipe
        self.enabled = distributed.is_main()
        self.path = Path(out_dir) / "metrics.jsonl"
        self.tb_dir = Path(out_dir) / "tb"
        self.resume_step = resume_step
        self.tb = None
        if self.enabled:
            self._truncate(resume_step)

    def _truncate(self, resume_step: int) -> None:
        if not self.path.exists():
            return
        text = self.path.read_text()
        lines = [line for line in text.splitlines() if line.strip()]
        rows = []
        for i, line in enumerate(lines):
            try:
                rows.append((line, json.loads(line)))
            except json.JSONDecodeError:
                if i < len(lines) - 1:
                    raise ValueError(f"{self.path} line {i + 1} is not JSON; this program only appends whole rows. "
                                     "Repair or delete that line, then run the same command again.") from None
                print(f"[ssl_platform] dropping the torn last line of {self.path} (a crash cut it short)",
                      file=sys.stderr, flush=True)
        kept = "".join(line + "\n" for line, row in rows if row.get("step", 0) <= resume_step)
        if kept != text:
            write_atomic(self.path, kept.encode())

    def _writer(self):
        if self.tb is None:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow, and rank 0 only

            # purge_step hides the dropped rows' events in the older event files
            self.tb = SummaryWriter(str(self.tb_dir), purge_step=self.resume_step + 1 if self.resume_step else None)
        return self.tb

    def log(self, step: int, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **row}
        data = (json.dumps(row) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            written = os.write(fd, data)  # one write: the row is in the file whole or not at all
        finally:
            os.close(fd)
        if written != len(data):  # only a full disk makes a regular file take less
            raise OSError(f"could not append a whole row to {self.path} ({written} of {len(data)} bytes); "
                          "is the disk full?")
        tb = self._writer()
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                tb.add_scalar(key, value, step)

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def log_step(logger: RunLogger, sums: dict[str, torch.Tensor], n_micro: int, step: int, epoch: int, lr: float,
             wd: float, seen: int, elapsed: float) -> dict[str, float]:
    """Log the mean of each 0-d output over the micro-steps since the last log and over ranks, plus
    lr, weight decay and samples per second; returns the row (every rank gets the same)."""
    row: dict[str, float] = {"epoch": epoch, "lr": lr, "wd": wd, "samples_per_s": seen / max(elapsed, 1e-9)}
    keys = sorted(sums)
    if keys:
        means = distributed.all_reduce_mean(torch.stack([sums[k] for k in keys]) / max(1, n_micro))
        row.update({f"train/{k}": v for k, v in zip(keys, means.tolist())})
    logger.log(step, row)
    return row


def run_monitor(monitor: Callable[[nn.Module, int], dict[str, float]], method: nn.Module, epoch: int, step: int,
                logger: RunLogger) -> None:
    """Run `monitor(method, epoch)`, restore the method's train flag, and log `monitor/<name>` (rank 0).

    Every rank runs it: the embedding loop a monitor uses (`ssl_platform.features`) shares the data
    between the ranks and gathers the features, a collective that every rank must join.
    """
    was_training = method.training
    metrics = monitor(method, epoch)
    method.train(was_training)
    if distributed.is_main():
        logger.log(step, {"epoch": epoch, **{f"monitor/{k}": v for k, v in metrics.items()}})
        print(f"[ssl_platform] epoch {epoch}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()), flush=True)
    distributed.barrier()
