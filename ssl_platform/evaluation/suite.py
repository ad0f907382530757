"""Evaluation suites: `eval/<suite>.yaml` -> features once per task -> kNN and linear probe -> results.

A suite is flat YAML (every key is checked by `load_suite`; unknown keys fail naming the valid ones):

    name: digits                          # optional label
    tasks:                                # task name -> three components
      digits:
        train: {_component_: ...Digits, split: train}          # kNN bank and probe training set
        test: {_component_: ...Digits, split: test}            # scored once
        transform: {_component_: ...EvalTransform, size: 8, channels: 1}
    eval: {protocols: [knn, linear], label_fractions: [1.0], seeds: [0], batch_size: 256, num_workers: 0}
    knn: {presets: [k20_t0.07, k200_t0.1]}
    linear: {lambdas: null, val_fraction: 0.2, max_iter: 1000, tol: 1.0e-4}
    random_backbone: {name: resnet18, small_input: true, in_chans: 1}   # create_backbone kwargs

Seeds drive what is random after feature extraction: the class-balanced labelled subset of a label
fraction and the linear probe's validation split. (kNN on all labels is deterministic, so its seeds
agree.) The backbone's own random init, for `backbone=random`, is seeded by the CLI.

This module is the only one in `evaluation/` that reads a config; it hands plain values on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from ssl_platform import config
from ssl_platform.config import ConfigError
from ssl_platform.data.datasets import balanced_subset
from ssl_platform.evaluation.features import extract_features
from ssl_platform.evaluation.knn import KNN_PRESETS, knn_accuracy, preset
from ssl_platform.evaluation.linear import LAMBDAS, linear_probe
from ssl_platform.evaluation.report import append_rows, make_row, write_summary

PROTOCOLS = ("knn", "linear")
RESULTS_FILE = "results.jsonl"


@dataclasses.dataclass
class TaskConfig:
    """One entry of `tasks:`: dataset components for train (bank / probe) and test, and the eval transform."""

    train: Any
    test: Any
    transform: Any


@dataclasses.dataclass
class EvalConfig:
    """The `eval:` section: which protocols, label fractions and seeds, and how to load images."""

    protocols: list = dataclasses.field(default_factory=lambda: list(PROTOCOLS))
    label_fractions: list = dataclasses.field(default_factory=lambda: [1.0])
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    batch_size: int = 256
    num_workers: int = 0


@dataclasses.dataclass
class KNNConfig:
    """The `knn:` section: named presets of `knn.KNN_PRESETS` (never mixed in one table)."""

    presets: list = dataclasses.field(default_factory=lambda: list(KNN_PRESETS))


@dataclasses.dataclass
class LinearConfig:
    """The `linear:` section: λ sweep (mean-loss convention; null = `linear.LAMBDAS`) and L-BFGS limits."""

    lambdas: Any = None
    val_fraction: float = 0.2
    max_iter: int = 1000
    tol: float = 1e-4


SECTIONS = {"name": str, "eval": EvalConfig, "knn": KNNConfig, "linear": LinearConfig}
# validated here rather than by config.validate: task names are the user's, and random_backbone's
# keys are create_backbone/timm kwargs
OWN_KEYS = ("tasks", "random_backbone")


def _check_tasks(tasks: Any) -> None:
    if not isinstance(tasks, DictConfig) or len(tasks) == 0:
        raise ConfigError("tasks must map task names to {train: ..., test: ..., transform: ...}; none given")
    for name, task in tasks.items():
        config.validate_section(task, TaskConfig, f"tasks.{name}.")
        for key in ("train", "test", "transform"):
            config.validate_component(task[key], f"tasks.{name}.{key}.")


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


def _check_values(ev: EvalConfig, knn: KNNConfig, linear: LinearConfig) -> None:
    """Value checks the key checks cannot do; each message says what to write instead."""
    for name in ev.protocols:
        if name not in PROTOCOLS:
            raise ConfigError(
                f"eval.protocols: unknown protocol {name!r}; valid protocols: {', '.join(PROTOCOLS)}"
            )
    if not ev.protocols or not ev.seeds or not ev.label_fractions:
        raise ConfigError(
            "eval.protocols, eval.seeds and eval.label_fractions must each list at least one value"
        )
    for fraction in ev.label_fractions:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
            raise ConfigError(f"eval.label_fractions: {fraction} is not in (0, 1]; 1.0 means every label")
    if any(not isinstance(s, int) for s in ev.seeds) or len(set(ev.seeds)) != len(ev.seeds):
        raise ConfigError(f"eval.seeds must be distinct integers, got {ev.seeds}")
    if ev.batch_size < 1 or ev.num_workers < 0:
        raise ConfigError(
            f"eval.batch_size must be >= 1 and eval.num_workers >= 0, got {ev.batch_size}, {ev.num_workers}"
        )
    for name in knn.presets:
        if name not in KNN_PRESETS:
            raise ConfigError(
                f"knn.presets: unknown preset {name!r}; valid presets: {', '.join(KNN_PRESETS)}"
            )
    if linear.lambdas is not None and (not linear.lambdas or any(float(v) < 0 for v in linear.lambdas)):
        raise ConfigError(
            f"linear.lambdas must be null (the default sweep) or a list of λ >= 0, got {linear.lambdas}"
        )
    if not 0.0 < linear.val_fraction < 1.0:
        raise ConfigError(f"linear.val_fraction must be in (0, 1), got {linear.val_fraction}")


def load_suite(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load, override (`eval.seeds=[0,1,2]`, `linear.max_iter=200`...) and validate a suite.

    Returns:
        The suite with every section's defaults filled in, so the saved copy is complete.
    """
    cfg = config.load(path, overrides)
    config.validate(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in OWN_KEYS]), SECTIONS)
    _check_tasks(cfg.get("tasks"))
    _check_random_backbone(cfg.get("random_backbone"))
    try:
        sections = {key: config.section(cfg.get(key), SECTIONS[key]) for key in ("eval", "knn", "linear")}
    except TypeError as err:  # a required field left out
        raise ConfigError(f"suite {path}: {err}") from err
    _check_values(sections["eval"], sections["knn"], sections["linear"])
    for key, value in sections.items():
        cfg[key] = dataclasses.asdict(value)
    return cfg


def _num_classes(dataset: Any, *labels: Tensor) -> int:
    """Classes of a task: the dataset's class list, or one more than the largest label seen."""
    largest = max(int(y.max()) for y in labels) + 1
    return max(len(getattr(dataset, "classes", []) or []), largest)


def labelled_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices of a class-balanced `fraction` of `labels` ([N]); everything for fraction 1.0."""
    limit = None if fraction >= 1.0 else max(1, round(fraction * len(labels)))
    return torch.from_numpy(balanced_subset(labels.numpy(), limit, seed))


def evaluate_features(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    ev: EvalConfig,
    knn: KNNConfig,
    linear: LinearConfig,
    seed: int,
    device: str,
) -> list[tuple[str, str, float]]:
    """Every configured protocol on one set of cached features -> (protocol, metric, value) triples.

    Args:
        train: (feats [N, D], labels [N]) the labelled bank / probe training set.
        test: (feats [M, D], labels [M]).
    """
    out = []
    if "knn" in ev.protocols:
        for name in knn.presets:
            k, temperature = preset(name)
            acc = knn_accuracy(*train, *test, k=k, temperature=temperature, num_classes=num_classes)
            out.append((f"knn_{name}", "top1", acc))
    if "linear" in ev.protocols:
        result = linear_probe(
            *train,
            *test,
            lambdas=LAMBDAS if linear.lambdas is None else [float(v) for v in linear.lambdas],
            val_fraction=linear.val_fraction,
            seed=seed,
            max_iter=linear.max_iter,
            tol=linear.tol,
            device=device,
        )
        # λ in the mean-loss convention (sklearn C = 1 / (λ n)), kept so the selection can be audited
        out += [("linear", "top1", result.test_accuracy), ("linear", "lambda", result.best_lambda)]
    return out


def run_task(
    name: str,
    task: TaskConfig,
    sections: tuple[EvalConfig, KNNConfig, LinearConfig],
    backbone: nn.Module,
    backbone_name: str,
    device: str,
) -> list[dict[str, Any]]:
    """Extract one task's features once, then run every label fraction x seed x protocol on them."""
    ev, knn, linear = sections
    train_set, test_set = config.instantiate(task.train), config.instantiate(task.test)
    transform = config.instantiate(task.transform)
    start = time.perf_counter()
    x_train, y_train = extract_features(backbone, train_set, transform, ev.batch_size, ev.num_workers, device)
    x_test, y_test = extract_features(backbone, test_set, transform, ev.batch_size, ev.num_workers, device)
    print(
        f"[eval] {name}: features {tuple(x_train.shape)} train, {tuple(x_test.shape)} test "
        f"in {time.perf_counter() - start:.1f}s",
        flush=True,
    )
    num_classes = _num_classes(train_set, y_train, y_test)
    rows = []
    for fraction in ev.label_fractions:
        for seed in ev.seeds:
            keep = labelled_subset(y_train, float(fraction), seed)
            measured = evaluate_features(
                (x_train[keep], y_train[keep]), (x_test, y_test), num_classes, ev, knn, linear, seed, device
            )
            rows += [
                make_row(
                    task=name,
                    protocol=protocol,
                    metric=metric,
                    value=value,
                    backbone=backbone_name,
                    seed=seed,
                    label_fraction=fraction,
                )
                for protocol, metric, value in measured
            ]
    print(f"[eval] {name}: done in {time.perf_counter() - start:.1f}s", flush=True)
    return rows


def run_suite(
    suite_cfg: DictConfig,
    backbone: nn.Module,
    backbone_name: str,
    out_dir: str | Path,
    device: str = "cpu",
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Run a suite loaded by `load_suite` on one backbone; write results.jsonl, summary.md, suite.yaml.

    Args:
        suite_cfg: from `load_suite`.
        backbone: timm contract, already on `device`.
        backbone_name: the `backbone` value of every row (run dir name, zoo name, "random").
        out_dir: created if needed; results are appended task by task, so a crash keeps finished tasks.
        device: where features are extracted and the linear probe is fitted (kNN runs in faiss on the CPU).
        overwrite: replace an existing results.jsonl instead of refusing.

    Returns:
        The rows written to results.jsonl.
    """
    out_dir = Path(out_dir)
    results = out_dir / RESULTS_FILE
    if results.exists():
        if not overwrite:
            raise FileExistsError(
                f"{results} already exists; pass another out_dir=..., or overwrite=true to replace it "
                "(appending would mix two runs)"
            )
        results.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(suite_cfg, out_dir / "suite.yaml", resolve=True)
    sections = tuple(config.section(suite_cfg.get(key), SECTIONS[key]) for key in ("eval", "knn", "linear"))
    rows = []
    for name, task in suite_cfg.tasks.items():
        task = config.section(task, TaskConfig)
        task_rows = run_task(str(name), task, sections, backbone, backbone_name, device)
        append_rows(results, task_rows)
        rows += task_rows
    write_summary(out_dir, rows)
    return rows
