"""What a recipe will really train with, and whether that is what its source says.

A recipe states some values and leaves the rest to defaults: its components' signatures, the
optimizer library's own defaults (timm's Lamb clips gradients at 1.0 unless told otherwise), the
engine's `train` defaults and its lr scaling rule. `effective_settings` flattens all of it into
dotted keys, without building the model:

    method._component_, method.<kwarg>, method.backbone_kwargs.<key>
    data.batch_size, data.transform.<kwarg>, data.dataset.<kwarg>
    optimizer._component_, optimizer.<every default of the built optimizer>, optimizer.peak_lr
    train.<every TrainConfig field>, batch.global, world_size

`check_against_paper` compares them with the recipe's `paper:` section (see `pretrain.SourceConfig`),
so a setting that drifts from its source, or a library default that silently differs from it, fails
`tests/test_recipe_provenance.py` with the key, the source's value and ours.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from ssl_platform import config
from ssl_platform.engine.optim import scale_lr
from ssl_platform.engine.trainer import TrainConfig
from ssl_platform.pretrain import DataConfig, SourceConfig, probe_optimizer


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}", sub, out)
    else:
        out[prefix] = list(value) if isinstance(value, tuple) else value


def component_settings(node: Any) -> dict[str, Any]:
    """A component's kwargs as the callable will see them: the recipe's, then its signature's defaults."""
    node = config.to_plain(node)
    fn = config.locate(node[config.COMPONENT])
    settings = {name: p.default for name, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}
    settings.update({k: v for k, v in node.items() if k != config.COMPONENT})
    settings[config.COMPONENT] = node[config.COMPONENT]
    return settings


def effective_settings(cfg: DictConfig) -> dict[str, Any]:
    """Every setting a validated recipe (`pretrain.load_recipe`) runs with, by dotted key (module docstring)."""
    source = config.section(cfg.get("source"), SourceConfig)
    data = config.section(cfg.data, DataConfig)
    train = config.section(cfg.train, TrainConfig)
    out: dict[str, Any] = {"world_size": source.world_size}
    _flatten("method", component_settings(cfg.method), out)
    _flatten("train", dataclasses.asdict(train), out)
    _flatten("data", {k: v for k, v in dataclasses.asdict(data).items() if k not in ("dataset", "transform", "collate")},
             out)
    for key in ("dataset", "transform"):
        if getattr(data, key) is not None:
            _flatten(f"data.{key}", component_settings(getattr(data, key)), out)
    # the optimizer as the library builds it: its defaults hold what the recipe left unsaid
    optimizer = probe_optimizer(cfg.optimizer)
    _flatten("optimizer", {config.COMPONENT: cfg.optimizer[config.COMPONENT], **optimizer.defaults}, out)
    out["batch.global"] = data.batch_size * source.world_size * train.accum_steps
    out["optimizer.peak_lr"] = scale_lr(float(optimizer.defaults["lr"]), out["batch.global"], train.lr_scaling)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return a == b


def check_against_paper(cfg: DictConfig) -> list[str]:
    """One line per `paper:` entry the recipe does not run with (empty: every value matches).

    An entry is `key: value` (the recipe runs with the source's value) or `key: {paper: value, ours:
    value, why: reason}` (a deliberate difference: the recipe runs with `ours`, and says why).
    """
    problems = [f"before.{line}" for line in check_against_paper(cfg.before)] if cfg.get("before") else []
    effective = effective_settings(cfg)
    for key, expected in config.to_plain(cfg.get("paper") or {}).items():
        if isinstance(expected, Mapping):
            if set(expected) != {"paper", "ours", "why"} or not str(expected.get("why") or "").strip():
                problems.append(f"paper.{key}: a deliberate difference is {{paper: ..., ours: ..., why: ...}} "
                                f"with a reason, got {expected}")
                continue
            expected = expected["ours"]
        if key not in effective:
            problems.append(f"paper.{key}: the recipe has no setting of that name (effective settings are keyed "
                            "like method.temperature, optimizer.peak_lr, train.warmup_epochs)")
        elif not _same(effective[key], expected):
            problems.append(f"paper.{key}: the source says {expected!r}, the recipe runs with {effective[key]!r}")
    return problems
