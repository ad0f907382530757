"""Exponential moving averages of a network (the target encoders of I-JEPA and T-JEPA).

A method keeps the EMA copy as a submodule (so it is checkpointed and resumes exactly) and calls
`ema_update` from its `on_step_end(progress)` hook, which the engine runs after every optimizer step.
The update itself is lightly's `update_momentum`; this module adds the schedule and the frozen copy.
"""

from __future__ import annotations

import copy

from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose parameters never receive gradients (the optimizer skips them)."""
    target = copy.deepcopy(module)
    deactivate_requires_grad(target)
    return target


def linear_momentum(progress: float, start: float = 0.996, end: float = 1.0) -> float:
    """I-JEPA's schedule: momentum rises linearly from `start` to `end` over training (`progress` in [0, 1])."""
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"EMA momentum must satisfy 0 <= start <= end <= 1, got start={start}, end={end}")
    return start + (end - start) * min(max(progress, 0.0), 1.0)


def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """`target <- momentum * target + (1 - momentum) * online`, parameter by parameter, without grad."""
    update_momentum(online, target, momentum)
