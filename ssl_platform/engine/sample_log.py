"""Which samples each optimizer step trained on: `train.log_samples=true` writes them, `global_order`
reads them back.

The log is how the sample order is checked, not a metric: a resumed run (even one resumed on another
number of processes) must train every step on exactly the samples an uninterrupted run would have,
which weights alone cannot show where per-process statistics (BatchNorm) make them differ by design.

Each rank appends one JSON line per micro-step to `<out_dir>/samples/rank<R>.jsonl`:
`{"attempt": A, "epoch": E, "step": S, "micro": M, "rank": R, "world": W, "index": [...]}`, where S is
the optimizer step the micro-step belongs to (0-based), M its place among the step's micro-steps and
A identifies one start of the run (the step it started from, then the start time). Steps replayed
after a kill are logged again by the later attempt, which `global_order` prefers.

Reading a batch's indices off a CUDA tensor waits for the device: the option is for checks, not runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

SAMPLES_DIR = "samples"


class SampleLog:
    """Appends this rank's micro-step indices to `<out_dir>/samples/rank<R>.jsonl` (a no-op when disabled).

    Args:
        out_dir: the run directory.
        attempt: `[start_step, start_time_ns]`, the same on every rank of one start of the run.
        rank, world: this process's place.
        enabled: `train.log_samples`.
    """

    def __init__(self, out_dir: Path, attempt: list[int], rank: int, world: int, enabled: bool):
        self.enabled = enabled
        self.path = Path(out_dir) / SAMPLES_DIR / f"rank{rank}.jsonl"
        self.attempt, self.rank, self.world = attempt, rank, world
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, epoch: int, step: int, micro: int, index: torch.Tensor) -> None:
        """Log micro-step `micro` of optimizer step `step`; `index` is the batch's `[B]` dataset indices."""
        if not self.enabled:
            return
        line = json.dumps({"attempt": self.attempt, "epoch": epoch, "step": step, "micro": micro,
                           "rank": self.rank, "world": self.world, "index": index.tolist()}) + "\n"
        # one O_APPEND write per line: a kill never leaves half a line for the reader to trip on
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def global_order(out_dir: str | Path) -> dict[int, list[int]]:
    """`{step: [indices]}`: each optimizer step's samples in global order (micro-step, then rank).

    For a step logged by several attempts (a kill after the step, before the next save, replays it)
    the latest attempt's lines count, so the result is what the finished run trained on.

    Raises:
        FileNotFoundError: the run has no sample log (it was not run with `train.log_samples=true`).
        ValueError: a step's lines are incomplete (some rank or micro-step missing).
    """
    directory = Path(out_dir) / SAMPLES_DIR
    files = sorted(directory.glob("rank*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{directory} holds no rank*.jsonl; run with train.log_samples=true to log samples")
    lines = [json.loads(text) for f in files for text in f.read_text().splitlines() if text.strip()]
    by_step: dict[int, list[dict]] = {}
    for line in lines:
        by_step.setdefault(line["step"], []).append(line)
    order: dict[int, list[int]] = {}
    for step, logged in sorted(by_step.items()):
        attempt = max(x["attempt"] for x in logged)
        chosen = {(x["micro"], x["rank"]): x for x in logged if x["attempt"] == attempt}
        world = next(iter(chosen.values()))["world"]
        micros = sorted({m for m, _ in chosen})
        expected = {(m, r) for m in range(len(micros)) for r in range(world)}
        if set(chosen) != expected:
            raise ValueError(f"{directory}: step {step} is missing (micro-step, rank) lines "
                             f"{sorted(expected - set(chosen))}; was a rank's log removed?")
        order[step] = [i for key in sorted(chosen) for i in chosen[key]["index"]]
    return order
