"""Asking a run to stop: SIGINT, SIGTERM and SIGUSR1 end a run after its current optimizer step.

A batch queue preempting a job, a terminal's Ctrl-C and torchrun's shutdown all send one of
`STOP_SIGNALS`. While `fit` trains, `catch_stop_signals` turns the first of them into a flag
(`StopRequest`) that the loop reads between micro-steps; the loop then finishes the step, saves a
checkpoint of it and raises `RunInterrupted`, on every rank at the same step. Data loader workers
ignore the signals (`ignore_stop_signals`) and are shut down by the trainer (`stop_workers`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# what a batch queue, a terminal's Ctrl-C or torchrun sends to ask a run to stop
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class RunInterrupted(Exception):
    """The run stopped on SIGINT, SIGTERM or SIGUSR1 after saving a checkpoint; the same command resumes it.

    Attributes:
        signum: the signal received.
        step: the step the saved checkpoint holds.
        out_dir: the run directory.
    """

    def __init__(self, signum: int, step: int, out_dir: str | Path):
        self.signum, self.step, self.out_dir = signum, step, Path(out_dir)
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} at step {step}: checkpoint saved to "
            f"{self.out_dir / 'checkpoints' / 'last.pt'}; run the same command again to resume"
        )


class StopRequest:
    """The first stop signal received while training (0: none yet)."""

    signum = 0


@contextlib.contextmanager
def catch_stop_signals() -> Iterator[StopRequest]:
    """While a run trains, SIGINT, SIGTERM and SIGUSR1 ask it to stop after the current optimizer step
    (saving a checkpoint) instead of killing it.

    Later signals are ignored: the stop under way ends in an atomic save, and SIGKILL still stops a
    run at once (losing only the steps since the last checkpoint). Handlers are installed only in
    the main thread (the only one Python lets set them); the previous ones are put back on exit.
    """
    request = StopRequest()

    def note(signum: int, frame: Any) -> None:
        # only a flag: the loop acts on it between steps, never halfway through one or through a save
        request.signum = request.signum or signum

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, note) for sig in STOP_SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            # None: a handler set outside Python, which cannot be put back; the default is the closest
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def ignore_stop_signals(worker_id: int) -> None:
    """A data loader's `worker_init_fn`: the worker ignores `STOP_SIGNALS`."""
    # data loader workers are in the trainer's process group, so a terminal's Ctrl-C, torchrun's
    # killpg and Slurm signal them too; they must live on until the trainer has saved (it stops them)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def stop_workers(batches: Any) -> None:
    """Shut an epoch's loader workers down now, also when the epoch ends in an exception.

    The workers ignore the stop signals (`ignore_stop_signals`), so multiprocessing's exit handler,
    which SIGTERMs and then joins them, would wait forever for workers of an iterator that an
    exception's traceback keeps alive. `_shutdown_workers` is torch's own (private) clean stop.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()
