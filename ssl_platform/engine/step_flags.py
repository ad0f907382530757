"""What every rank must act on together, agreed without making the host wait for the device every step.

Each micro-step puts three flags in one tensor on the device: the loss is not finite, the stop signal
this rank received (0: none), rank 0's clock says a save is due. One all-reduce (max) makes them the
same on every rank (ranks acting alone would leave the others waiting in the next collective until it
timed out); a single process acts on its own signal and clock at once. The host reads them one
micro-step late: by the time it asks, the device has long computed
them, so reading does not stall the queue of work the host has already launched. Before anything is
saved the host reads the latest flags at once (`settle`), so a non-finite loss never reaches a
checkpoint: the update it caused was applied in memory only, and the run stops there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ssl_platform import distributed


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the last good checkpoint is kept untouched."""


class StepFlags:
    """The flags of the micro-step before the current one, and those of the current one on demand.

    Args:
        out_dir: the run directory (named in the error when the loss is not finite).
    """

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.pending: tuple[torch.Tensor, torch.Tensor, int, int] | None = None

    def post(self, loss: torch.Tensor, signum: int, save_due: bool, step: int, epoch: int) -> tuple[int, bool]:
        """Agree on this micro-step's flags (asynchronously where the backend allows) and act on the
        previous one's.

        Args:
            loss: this micro-step's 0-d loss (on the device).
            signum: the stop signal this process received, or 0.
            save_due: rank 0's clock says save (ignored elsewhere).
            step, epoch: this micro-step's optimizer step (0-based, not yet taken) and epoch, for the error.

        Returns:
            (the agreed signal number or 0, whether a save is due), as of the previous micro-step (as of
            this one in a single process, which needs no agreement).

        Raises:
            NonFiniteLossError: the previous micro-step's loss is NaN or inf on some rank (every rank
                raises at the same micro-step).
        """
        full = {"device": loss.device, "dtype": torch.float32}
        flags = torch.stack([(~torch.isfinite(loss.detach())).float(), torch.full((), float(signum), **full),
                             torch.full((), float(save_due), **full)])
        previous, self.pending = self.pending, (distributed.all_reduce_max(flags), loss.detach(), step, epoch)
        agreed = self._read(previous)
        # one process has nothing to agree with: it acts on its own signal and clock at once
        return (signum, save_due) if distributed.world_size() == 1 else agreed

    def settle(self) -> tuple[int, bool]:
        """Read the latest micro-step's flags now (before a save, and at the end)."""
        latest, self.pending = self.pending, None
        return self._read(latest)

    def _read(self, entry: tuple[torch.Tensor, torch.Tensor, int, int] | None) -> tuple[int, bool]:
        if entry is None:
            return 0, False
        flags, loss, step, epoch = entry
        bad, agreed, due = flags.tolist()  # the host reads a step late: the device computed these long ago
        if bad > 0:
            last = self.out_dir / "checkpoints" / "last.pt"
            kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint had been written yet"
            value = loss.item() if not torch.isfinite(loss).item() else "not finite on another process"
            raise NonFiniteLossError(
                f"the loss is {value} at step {step + 1} (epoch {epoch}); stopped before any update from it was "
                f"saved, {kept}. Lower the optimizer lr, set "
                "train.clip_grad, or use train.precision=fp32, then run the same command again to resume."
            )
        return int(agreed), due > 0
