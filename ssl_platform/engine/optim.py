"""Parameter groups and the learning-rate scaling rule."""

from __future__ import annotations

import math

from torch import nn


def param_groups(module: nn.Module) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group.

    Biases and normalisation weights (every parameter with fewer than 2 dims, plus whatever a module
    lists in its `no_weight_decay()`, e.g. position embeddings) get no weight decay: decay on them
    only fights the normalisation and hurts accuracy (SimCLR, MAE, timm all exclude them). LARS also
    skips its trust-ratio adaptation for groups with weight_decay 0. `no_weight_decay` is declared by
    `methods.base.Method` and by many timm models; other submodules (timm's that lack it, plain
    torch layers) simply do not have it, so it is looked for on each.

    Each group carries `wd_scale` (1.0 or 0.0) that the engine multiplies the scheduled decay by.
    """
    skip: set[str] = set()
    for prefix, sub in module.named_modules():
        if hasattr(sub, "no_weight_decay") and callable(sub.no_weight_decay):
            skip |= {f"{prefix}.{n}" if prefix else n for n in sub.no_weight_decay()}
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in skip else decay).append(p)
    groups = [{"params": decay, "wd_scale": 1.0, "group": "decay"},
              {"params": no_decay, "wd_scale": 0.0, "group": "no_decay"}]
    return [g for g in groups if g["params"]]


def scale_lr(lr: float, global_batch: int, rule: str = "linear") -> float:
    """Recipes give `lr` per 256 samples of global batch; return the lr for `global_batch`.

    `linear`: lr * B/256 (Goyal et al.); `sqrt`: lr * sqrt(B/256) (SimCLR's small-batch rule);
    `none`: lr as written.
    """
    if rule == "linear":
        return lr * global_batch / 256
    if rule == "sqrt":
        return lr * math.sqrt(global_batch / 256)
    if rule == "none":
        return lr
    raise ValueError(f"train.lr_scaling must be one of linear, sqrt, none; got {rule!r}")
