"""Per-step schedules, pure functions of the step (so a resumed run needs no scheduler state).

Per-iteration rather than per-epoch so that curves line up across batch sizes and resumption
mid-epoch lands on exactly the same value.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base: float, final: float = 0.0) -> float:
    """Linear warm-up from base/warmup_steps to `base` over `warmup_steps`, then cosine to `final`.

    `step` counts optimizer steps from 0; the value is the one used *for* that step.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * progress))


def cosine(progress: float, start: float, end: float) -> float:
    """Cosine from `start` (progress 0) to `end` (progress 1), e.g. a weight-decay schedule."""
    progress = min(max(progress, 0.0), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))
