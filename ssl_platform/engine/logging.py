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

With its first row the writer also records the run's recipe, once per run directory (a resumed run
finds it in the earlier event files and leaves it): as text (the resolved recipe as YAML, tag
`recipe`) and as the hyperparameters of TensorBoard's HParams dashboard (the recipe flattened to
`train.lr`-style keys). Only the session's hyperparameters are written, no fixed list of metrics, so
the dashboard lists every scalar of the run next to them at its last value: the final metrics, also
after a resume. The trackers of `monitor.loggers` (`trackers.py`: W&B, MLflow) start with that row
too, get every row, and are closed with the run.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from ssl_platform import distributed
from ssl_platform.checkpoint.io import write_atomic
from ssl_platform.engine import trackers
from ssl_platform.engine.preemption import RunInterrupted

RECIPE_TAG = "recipe"  # the text of the resolved recipe in TensorBoard (stored as recipe/text_summary)
HPARAMS_TAG = "_hparams_/session_start_info"  # the HParams plugin's tag for a run's hyperparameters


class RunLogger:
    """Append metrics to `<run>/metrics.jsonl`, `<run>/tb/` and the recipe's trackers (rank 0 only;
    no-op elsewhere).

    Args:
        out_dir: the run directory.
        resume_step: step of the checkpoint being resumed (0 for a fresh run); later rows are removed.
        recipe: the resolved recipe (plain dict) of the run, or None; its `monitor.loggers` selects
            the trackers (checked here, on every rank, so that a bad one stops every rank at once).
    """

    def __init__(self, out_dir: str | Path, resume_step: int = 0, recipe: dict | None = None):
        self.recipe = recipe
        self.enabled = distributed.is_main()
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "metrics.jsonl"
        self.tb_dir = self.out_dir / "tb"
        self.resume_step = resume_step
        self.tb = None
        self.trackers: list = []
        monitor = (recipe or {}).get("monitor") or {}
        self.tracker_specs = trackers.parse_loggers(monitor.get("loggers") if isinstance(monitor, dict) else None)
        trackers.check_installed(self.tracker_specs)
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

            earlier = sorted(self.tb_dir.glob("events.out.tfevents.*")) if self.tb_dir.is_dir() else []
            # purge_step hides the dropped rows' events in the earlier event files (all of them from
            # step 1 on when a run that died before its first checkpoint starts again)
            _wait_past(earlier)
            self.tb = SummaryWriter(str(self.tb_dir), purge_step=self.resume_step + 1 if earlier else None)
            if self.recipe is not None and not any(_has_recipe(path) for path in earlier):
                self._write_recipe()
            self.trackers = trackers.open_trackers(self.tracker_specs, self.recipe or {}, self.out_dir,
                                                   resume=self.resume_step > 0)
        return self.tb

    def _write_recipe(self) -> None:
        """The recipe as YAML text and as HParams hyperparameters, at step 0 (never purged by a resume)."""
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb  # lazily, with the writer

        text = OmegaConf.to_yaml(OmegaConf.create(self.recipe))
        self.tb.add_text(RECIPE_TAG, f"```yaml\n{text}```", 0)
        self.tb.file_writer.add_summary(hparams_pb(trackers.flatten(self.recipe)), 0)

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
        metrics = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        for key, value in metrics.items():
            tb.add_scalar(key, value, step)
        for tracker in list(self.trackers):
            try:
                tracker.log(step, metrics)
            except Exception as err:  # noqa: BLE001 - a tracker's outage must not stop training
                print(f"[ssl_platform] {type(tracker).__name__} failed to log step {step} ({err}); metrics go on "
                      f"to {self.path} and TensorBoard only", file=sys.stderr, flush=True)
                self.trackers.remove(tracker)

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        """Close the writer and the trackers; a tracker's run is marked by how the run ends (`close`
        is called in the trainer's `finally`): an exception on its way out fails it, a stop signal
        or Ctrl-C marks it killed."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        error = sys.exc_info()[1]
        status = ("FINISHED" if error is None else
                  "KILLED" if isinstance(error, (RunInterrupted, KeyboardInterrupt)) else "FAILED")
        closing, self.trackers = self.trackers, []
        for tracker in closing:
            tracker.close(status)


def _has_recipe(path: Path, head: int = 8) -> bool:
    """Whether the writer of this event file recorded the recipe: it is among the file's first events
    (a writer that died before flushing it left none, and the next one writes it again)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    events = itertools.islice(LegacyEventFileLoader(str(path)).Load(), head)  # a torn record ends the file
    return any(value.tag == HPARAMS_TAG for event in events for value in event.summary.value)


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


def _wait_past(earlier: list[Path]) -> None:
    """Wait until the wall clock is past the second the newest of `earlier` event files was created in.

    TensorBoard reads a directory's event files in name order; a name holds the second it was created
    in, then a per-process counter compared as text ("10" sorts before "9"). A writer opened in the same
    second as the newest earlier file (a resume within one process) could sort before it, and its purge
    of the dropped rows would be read first and lost. Only then does this wait, for under a second; a
    name further in the future (a skewed clock, or a run directory made to stall us) is not waited for.
    """
    seconds = [int(part) for part in (path.name.split(".")[3] for path in earlier) if part.isdigit()]
    delay = max(seconds) + 1 - time.time() if seconds else 0.0
    if 0 < delay <= 1:
        time.sleep(delay)
