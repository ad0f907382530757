"""Run logs: `metrics.jsonl` (one JSON object per logged step) and TensorBoard scalars.

Only rank 0 writes. On resume, rows past the checkpoint's step (written by the run that died after
its last checkpoint) are dropped and TensorBoard purges them too, so the logs read as one run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssl_platform import distributed


class RunLogger:
    """Append metrics to `<run>/metrics.jsonl` and `<run>/tb/` (rank 0 only; no-op elsewhere).

    Args:
        out_dir: the run directory.
        resume_step: step of the checkpoint being resumed (0 for a fresh run); later rows are removed.
    """

    def __init__(self, out_dir: str | Path, resume_step: int = 0):
        self.enabled = distributed.is_main()
        self.path = Path(out_dir) / "metrics.jsonl"
        self.tb = None
        if not self.enabled:
            return
        self._truncate(resume_step)
        from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow, and rank 0 only

        self.tb = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=resume_step + 1 if resume_step else None)

    def _truncate(self, resume_step: int) -> None:
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def log(self, step: int, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **row}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                self.tb.add_scalar(key, value, step)

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
