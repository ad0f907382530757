"""Loading a suite: `load_suite` reads `eval/<suite>.yaml` with `key=value` overrides and makes every
check of it, so that a wrong key or value fails before any feature is extracted, naming the key and
saying what to write instead.

The checks, in order: the keys of every section against its dataclass (`suite_schema`, through
`config.validate`), the tasks' keys and components, `random_backbone`'s timm kwargs, interpolations,
then the values: ranges, names of protocols, presets, noise kinds, losses and optimizers, and what
each task kind can run (`protocols.KIND_PROTOCOLS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
from omegaconf import DictConfig, OmegaConf

from ssl_platform import config
from ssl_platform.config import ConfigError
from ssl_platform.evaluation import knn as knn_lib
from ssl_platform.evaluation import noise as noise_lib
from ssl_platform.evaluation import svm as svm_lib
from ssl_platform.evaluation.finetune import OPTIMIZERS
from ssl_platform.evaluation.noise_multilabel import MULTILABEL_KINDS
from ssl_platform.evaluation.noise_single import SYMMETRIC_CONVENTIONS
from ssl_platform.evaluation.protocols import KIND_PROTOCOLS, KINDS, PROTOCOLS
from ssl_platform.evaluation.robust import ROBUST
from ssl_platform.evaluation.robust_losses import LOSSES
from ssl_platform.evaluation.suite_schema import OWN_KEYS, SECTIONS, Suite, TaskConfig
from ssl_platform.models.backbones import check_timm_kwargs


def _check_tasks(tasks: Any) -> None:
    if not isinstance(tasks, DictConfig) or len(tasks) == 0:
        raise ConfigError("tasks must map task names to {train: ..., test: ..., transform: ...}; none given")
    for name, task in tasks.items():
        where = f"tasks.{name}."
        config.validate_section(task, TaskConfig, where)
        for key in ("train", "test", "transform", "val", "train_transform"):
            if task.get(key) is not None:
                config.validate_component(task[key], f"{where}{key}.")
        if task.get("kind", "classification") not in KINDS:
            raise ConfigError(f"{where}kind: {task.kind!r} is not one of {', '.join(KINDS)}")
        if task.get("extractor") is not None:
            try:
                config.locate(str(task.extractor))
            except ConfigError as err:
                raise ConfigError(f"{where}extractor: {err}") from None


def _check_random_backbone(node: Any) -> None:
    if node is None:
        return
    if not isinstance(node, DictConfig) or "name" not in node:
        raise ConfigError(
            "random_backbone must be a mapping of create_backbone kwargs with a name, e.g. "
            "{name: resnet18, small_input: true, in_chans: 1}"
        )
    if not timm.is_model(str(node.name)):
        raise ConfigError(f"random_backbone.name {node.name!r} is not a timm model (see timm.list_models())")
    try:
        check_timm_kwargs(config.to_plain(node), "random_backbone")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _one_of(values: Sequence[Any], valid: Sequence[str], where: str) -> None:
    for value in values:
        if value not in valid:
            raise ConfigError(f"{where}: unknown value {value!r}; valid values: {', '.join(valid)}")


def _check_values(suite: Suite, tasks: DictConfig) -> None:
    """Value checks the key checks cannot do; each message says what to write instead."""
    ev = suite.eval
    _one_of(ev.protocols, PROTOCOLS, "eval.protocols")
    if not ev.protocols or not ev.seeds or not ev.label_fractions:
        raise ConfigError("eval.protocols, eval.seeds and eval.label_fractions must each list at least one value")
    for fraction in ev.label_fractions:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
            raise ConfigError(f"eval.label_fractions: {fraction} is not in (0, 1]; 1.0 means every label")
    if any(not isinstance(s, int) for s in ev.seeds) or len(set(ev.seeds)) != len(ev.seeds):
        raise ConfigError(f"eval.seeds must be distinct integers, got {ev.seeds}")
    if ev.batch_size < 1 or ev.num_workers < 0:
        raise ConfigError(f"eval.batch_size must be >= 1 and eval.num_workers >= 0, got {ev.batch_size}, {ev.num_workers}")
    _one_of(suite.knn.presets, tuple(knn_lib.KNN_PRESETS), "knn.presets")
    lambdas = suite.linear.lambdas
    if lambdas is not None and (not lambdas or any(float(v) < 0 for v in lambdas)):
        raise ConfigError(f"linear.lambdas must be null (the default sweep) or a list of λ >= 0, got {lambdas}")
    if not 0.0 < suite.linear.val_fraction < 1.0:
        raise ConfigError(f"linear.val_fraction must be in (0, 1), got {suite.linear.val_fraction}")
    _one_of(suite.noise.kinds, [k for k in noise_lib.KINDS if k != "none"], "noise.kinds")
    if bool(suite.noise.kinds) != bool(suite.noise.rates):
        raise ConfigError("noise.kinds and noise.rates go together: give both (or neither for clean labels only)")
    for rate in suite.noise.rates:
        if not isinstance(rate, (int, float)) or not 0.0 < rate <= 1.0:
            raise ConfigError(f"noise.rates: {rate} is not in (0, 1]; the clean setting always runs first")
    _one_of([suite.noise.convention], SYMMETRIC_CONVENTIONS, "noise.convention")
    _one_of(suite.robust.methods, ROBUST, "robust.methods")
    for key in ("finetune", "linear_sgd"):
        section = getattr(suite, key)
        _one_of(section.losses, LOSSES, f"{key}.losses")
        _one_of([section.optimizer], OPTIMIZERS, f"{key}.optimizer")
        if not section.losses or section.epochs < 1 or section.batch_size < 1:
            raise ConfigError(f"{key}: losses must list at least one loss, and epochs and batch_size be >= 1")
    _check_heads(suite)
    for name, task in tasks.items():
        kind, protocols = task.get("kind", "classification"), task.get("protocols")
        if protocols is not None:
            _one_of(protocols, ev.protocols, f"tasks.{name}.protocols (a subset of eval.protocols)")
        unsupported = [p for p in (protocols or ev.protocols) if p not in KIND_PROTOCOLS[kind]]
        if unsupported:
            raise ConfigError(
                f"tasks.{name} is a {kind} task and cannot run {unsupported}; set tasks.{name}.protocols to a "
                f"subset of {list(KIND_PROTOCOLS[kind])}"
            )
        for key in ("finetune", "linear_sgd") if kind == "regression" else ():
            section = getattr(suite, key)
            if key in (protocols or ev.protocols) and (list(section.losses) != ["none"] or section.label_smoothing):
                raise ConfigError(
                    f"tasks.{name} is a regression task: {key} trains it with MSE, so set {key}.losses=[none] and "
                    f"{key}.label_smoothing=0 (robust losses and smoothing are for class labels), got "
                    f"{list(section.losses)}, {section.label_smoothing}"
                )
        if suite.noise.kinds and task.get("noise", True):
            _check_noise_kinds(name, kind, suite.noise.kinds)


def _check_noise_kinds(name: str, kind: str, kinds: Sequence[str]) -> None:
    """Label noise for the task's kind: single-label kinds for classification, `MULTILABEL_KINDS` for
    multi-label tasks, none for regression and retrieval."""
    multilabel = MULTILABEL_KINDS
    if kind in ("regression", "retrieval"):
        raise ConfigError(f"label noise is defined for classification and multi-label tasks; tasks.{name} is a {kind} "
                          f"task: set tasks.{name}.noise=false")
    wrong = [k for k in kinds if (k in multilabel) != (kind == "multilabel")]
    if wrong:
        valid = multilabel if kind == "multilabel" else [k for k in noise_lib.KINDS if k not in ("none", *multilabel)]
        raise ConfigError(f"noise.kinds {wrong} do not apply to tasks.{name}, a {kind} task: use {list(valid)}, or set "
                          f"tasks.{name}.noise=false (a suite whose tasks need different noise kinds is two suites)")


def _check_heads(suite: Suite) -> None:
    mlp, gbdt = suite.mlp, suite.gbdt
    if not mlp.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in mlp.hidden):
        raise ConfigError(f"mlp.hidden must list the hidden widths as positive integers, got {mlp.hidden}")
    for key, section in (("mlp", mlp), ("gbdt", gbdt)):
        if not 0.0 < section.val_fraction < 1.0:
            raise ConfigError(f"{key}.val_fraction must be in (0, 1) (early stopping), got {section.val_fraction}")
        if section.max_iter < 1 or section.patience < 1:
            raise ConfigError(f"{key}.max_iter and {key}.patience must be >= 1, got {section.max_iter}, "
                              f"{section.patience}")
    svm = suite.svm
    _one_of([svm.kernel], svm_lib.KERNELS, "svm.kernel")
    if not svm.cs or any(isinstance(c, bool) or not isinstance(c, (int, float)) or c <= 0 for c in svm.cs):
        raise ConfigError(f"svm.cs must list positive C values, got {svm.cs}")
    if svm.folds < 2:
        raise ConfigError(f"svm.folds must be >= 2 (stratified cross-validation picks C), got {svm.folds}")


def load_suite(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load, override (`eval.seeds=[0,1,2]`, `linear.max_iter=200`...) and validate a suite.

    Returns:
        The suite with every section's defaults filled in, so the saved copy is complete.
    """
    cfg = config.load(path, overrides)
    with config.naming_keys(f"suite {path}"):
        config.validate(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in OWN_KEYS]), SECTIONS)
        _check_tasks(cfg.get("tasks"))
        _check_random_backbone(cfg.get("random_backbone"))
    config.resolve_all(cfg, f"suite {path}")
    try:
        suite = Suite.from_config(cfg)
        tasks = {name: config.section(task, TaskConfig) for name, task in cfg.tasks.items()}
    except TypeError as err:  # a required field left out
        raise ConfigError(f"suite {path}: {err}") from err
    _check_values(suite, cfg.tasks)
    for f in dataclasses.fields(Suite):
        cfg[f.name] = dataclasses.asdict(getattr(suite, f.name))
    for name, task in tasks.items():
        cfg.tasks[name] = dataclasses.asdict(task)
    return cfg
