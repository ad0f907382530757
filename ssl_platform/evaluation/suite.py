"""Evaluation suites: `eval/<suite>.yaml` -> features once per task -> every protocol -> reports.

A suite is flat YAML; every key is checked by `load_suite` (unknown keys fail naming the valid ones):

    name: digits
    tasks:                                    # task name -> its data
      digits:
        kind: classification                  # | regression (rmse, r2) | multilabel (map) | retrieval (R@K)
        train: {_component_: ...Digits, split: train}     # kNN bank, probe and fine-tune training set
        val: null                             # optional: the linear probe picks λ here instead of on a
                                              # split carved from train (then refits on train + val)
        test: {_component_: ...Digits, split: test}       # scored once per setting; never corrupted
        transform: {_component_: ...EvalTransform, size: 8, channels: 1}
        train_transform: null                 # augmentation of fine-tune / linear_sgd (default: transform)
        extractor: null                       # dotted path (default features.extract_features)
        protocols: null                       # this task's subset of eval.protocols
        noise: true                           # false: clean labels only (classification and multi-label)
    eval: {protocols: [knn, linear, probe, linear_sgd, finetune], label_fractions: [0.1, 1.0], seeds: [0, 1]}
    noise: {kinds: [symmetric, asymmetric], rates: [0.2, 0.4], convention: exclusive, mapping: null}
    robust: {methods: [none, gce, sce, elr, nmtune], gce: {q: 0.7}, elr: {beta: 0.7, lam: 3.0}}
    knn: {presets: [k20_t0.07, k200_t0.1]}
    linear: {lambdas: null, val_fraction: 0.2, max_iter: 1000, tol: 1.0e-4}
    probe: {epochs: 30, lr: 1.0e-3, weight_decay: 1.0e-4, batch_size: 64}
    finetune: {epochs: 10, lr: 1.0e-3, losses: [none, elr], layer_decay: null, drop_path: 0.0, ...}
    linear_sgd: {epochs: 10, lr: 0.1, optimizer: sgd, weight_decay: 0.0, losses: [none]}
    mlp: {hidden: [256, 256], alpha: 1.0e-4, lr: 1.0e-3, batch_size: 256, max_iter: 200, val_fraction: 0.1,
          patience: 10}
    gbdt: {max_iter: 500, learning_rate: 0.1, max_leaf_nodes: 31, min_samples_leaf: 20, l2_regularization: 0.0,
           val_fraction: 0.1, patience: 20}
    svm: {cs: [1.0e-3, 1.0e-2, 0.1, 1.0, 10.0], kernel: rbf, folds: 5}
    random_backbone: {name: resnet18, small_input: true, in_chans: 1}   # create_backbone kwargs

What runs, for each task, label fraction, seed and noise setting (clean first, then every kind x rate):

- `knn_<preset>` and `linear` (L-BFGS) on cached features with the (noisy) labels; robust "none";
- `probe`: a head on cached features trained by minibatch AdamW once per `robust.methods` entry
  (cross-entropy, GCE, SCE, ELR, NMTune);
- `linear_sgd` and `finetune` through the engine, once per entry of their own `losses` (regression
  tasks: MSE on standardised targets, `losses: [none]`; RMSE and R²);
- `mlp` and `gbdt` (classification and regression; `tabular.py`): scikit-learn's early-stopped MLP and
  histogram gradient boosting on the cached features. Tables (`eval/tables_*.yaml`) read their rows
  with `extractor: ...features.extract_tabular_features` and compare a backbone with `backbone=raw`
  (the same heads on the raw columns, `tabular.RawTabular`).
- `svm` (classification; `svm.py`): scikit-learn's SVC on standardised cached features, C chosen by
  stratified k-fold cross-validation on the training rows (the graph-classification protocol); reports
  test `top1`, the selected C and its cross-validated accuracy `cv_top1`.
- `retrieval` (tasks of kind retrieval; `retrieval.py`): image-to-text and text-to-image R@1/5/10 over
  the test pairs, ranked by the method's own matching head. It needs the whole pretraining run, so
  the backbone must be given as `RUN_DIR` or `random:RUN_DIR` (each seed a fresh random init).

The labelled subset of a fraction is class-balanced and drawn by the seed from the clean labels;
noise then corrupts that subset's labels, seeded by the same seed, so every backbone sees exactly the
same noisy labels. Instance-dependent noise reads the images' pixels (`features.pixel_summary`),
never the backbone's features, for the same reason. The linear probe's λ is selected on a split of
the noisy labels (a clean validation set is not available in practice).

This module is the only one in `evaluation/` that reads a config; it hands plain values on. Under
torchrun every rank computes every protocol (fine-tuning trains with DDP; cached-feature protocols
are cheap and deterministic), and rank 0 writes the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from ssl_platform import config, distributed
from ssl_platform.checkpoint.io import write_atomic
from ssl_platform.config import ConfigError
from ssl_platform.data.datasets import balanced_subset
from ssl_platform.engine.run_dir import own_run_dir
from ssl_platform.evaluation import knn as knn_lib
from ssl_platform.evaluation import linear as linear_lib
from ssl_platform.evaluation import multilabel as multilabel_lib
from ssl_platform.evaluation import noise as noise_lib
from ssl_platform.evaluation import regression as regression_lib
from ssl_platform.evaluation import svm as svm_lib
from ssl_platform.evaluation import tabular as tabular_lib
from ssl_platform.evaluation.features import extract_features, pixel_summary
from ssl_platform.evaluation.finetune import OPTIMIZERS, LabelledView, finetune
from ssl_platform.evaluation.report import append_rows, make_row, write_report
from ssl_platform.evaluation.robust import LOSSES, ROBUST, train_head
from ssl_platform.models.backbones import check_timm_kwargs

PROTOCOLS = ("knn", "linear", "probe", "linear_sgd", "finetune", "mlp", "gbdt", "svm", "retrieval")
KINDS = ("classification", "regression", "multilabel", "retrieval")
# what a task kind can run: regression fine-tunes (and SGD-probes) with MSE but has no robust losses,
# multi-label has no trained head yet; retrieval ranks image-text pairs with the whole method (M3AE's
# matching head), not cached features
KIND_PROTOCOLS = {"classification": PROTOCOLS[:-1],
                  "regression": ("knn", "linear", "linear_sgd", "finetune", "mlp", "gbdt"),
                  "multilabel": ("knn", "linear"), "retrieval": ("retrieval",)}
RESULTS_FILE = "results.jsonl"


@dataclasses.dataclass
class TaskConfig:
    """One entry of `tasks:` (see the module docstring)."""

    train: Any
    test: Any
    transform: Any
    kind: str = "classification"
    val: Any = None
    train_transform: Any = None
    extractor: str | None = None
    protocols: list | None = None
    noise: bool = True


@dataclasses.dataclass
class EvalConfig:
    """The `eval:` section: which protocols, label fractions and seeds, and how to load images."""

    protocols: list = dataclasses.field(default_factory=lambda: ["knn", "linear"])
    label_fractions: list = dataclasses.field(default_factory=lambda: [1.0])
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    batch_size: int = 256
    num_workers: int = 0


@dataclasses.dataclass
class NoiseConfig:
    """The `noise:` section: every kind x rate runs after the clean setting (see `noise.py`).

    `convention` is symmetric noise's (exclusive: a flipped label is one of the other classes, so the
    realised rate equals the nominal one; inclusive: redrawn over all classes). `mapping` is the
    asymmetric class map (default: the standard CIFAR-10 one). `pixel_side`: instance-dependent
    noise reads images average-pooled to this side. Multi-label tasks take `noise.MULTILABEL_KINDS`
    (multilabel_mixed, multilabel_subtractive), classification tasks the others.
    """

    kinds: list = dataclasses.field(default_factory=list)
    rates: list = dataclasses.field(default_factory=list)
    convention: str = "exclusive"
    mapping: dict | None = None
    pixel_side: int = 8


@dataclasses.dataclass
class RobustConfig:
    """The `robust:` section: the probe's methods and each loss's keyword arguments."""

    methods: list = dataclasses.field(default_factory=lambda: ["none"])
    gce: dict = dataclasses.field(default_factory=dict)
    sce: dict = dataclasses.field(default_factory=dict)
    elr: dict = dataclasses.field(default_factory=dict)
    nmtune: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class KNNConfig:
    """The `knn:` section: named presets of `knn.KNN_PRESETS` (never mixed in one table)."""

    presets: list = dataclasses.field(default_factory=lambda: list(knn_lib.KNN_PRESETS))


@dataclasses.dataclass
class LinearConfig:
    """The `linear:` section: λ sweep (mean-loss convention; null = `linear.LAMBDAS`) and L-BFGS limits."""

    lambdas: Any = None
    val_fraction: float = 0.2
    max_iter: int = 1000
    tol: float = 1e-4


@dataclasses.dataclass
class ProbeConfig:
    """The `probe:` section: the minibatch head on cached features (NMTune's defaults)."""

    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64


@dataclasses.dataclass
class FinetuneConfig:
    """The `finetune:` section: whole-network training through the engine (lr per 256 samples)."""

    epochs: int = 10
    min_steps: int = 0  # more epochs for small labelled subsets, up to this many optimizer steps
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    batch_size: int = 128
    warmup_epochs: float = 1.0
    layer_decay: float | None = None
    drop_path: float = 0.0
    label_smoothing: float = 0.0
    precision: str = "auto"
    losses: list = dataclasses.field(default_factory=lambda: ["none"])


@dataclasses.dataclass
class LinearSGDConfig(FinetuneConfig):
    """The `linear_sgd:` section: a frozen backbone, a linear head on augmented images (DINO-style SGD)."""

    lr: float = 0.1
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    warmup_epochs: float = 0.0


@dataclasses.dataclass
class MLPConfig:
    """The `mlp:` section: `tabular.make_mlp` (hidden widths, L2 alpha, Adam lr; early stopping after
    `patience` epochs without gain on a `val_fraction` split of train)."""

    hidden: list = dataclasses.field(default_factory=lambda: [256, 256])
    alpha: float = 1e-4
    lr: float = 1e-3
    batch_size: int = 256
    max_iter: int = 200
    val_fraction: float = 0.1
    patience: int = 10


@dataclasses.dataclass
class GBDTConfig:
    """The `gbdt:` section: `tabular.make_gbdt` (HistGradientBoosting, early-stopped like `mlp`)."""

    max_iter: int = 500
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0
    val_fraction: float = 0.1
    patience: int = 20


@dataclasses.dataclass
class SVMConfig:
    """The `svm:` section: `svm.svm_probe` (C values searched, kernel, stratified folds on train)."""

    cs: list = dataclasses.field(default_factory=lambda: list(svm_lib.CS))
    kernel: str = "rbf"
    folds: int = 5


SECTIONS = {
    "name": str, "eval": EvalConfig, "noise": NoiseConfig, "robust": RobustConfig, "knn": KNNConfig,
    "linear": LinearConfig, "probe": ProbeConfig, "finetune": FinetuneConfig, "linear_sgd": LinearSGDConfig,
    "mlp": MLPConfig, "gbdt": GBDTConfig, "svm": SVMConfig,
}
# validated here rather than by config.validate: task names are the user's, and random_backbone's
# keys are create_backbone/timm kwargs
OWN_KEYS = ("tasks", "random_backbone")


@dataclasses.dataclass
class Suite:
    """A loaded suite as plain values: what `run_task` needs besides the task itself."""

    eval: EvalConfig
    noise: NoiseConfig
    robust: RobustConfig
    knn: KNNConfig
    linear: LinearConfig
    probe: ProbeConfig
    finetune: FinetuneConfig
    linear_sgd: LinearSGDConfig
    mlp: MLPConfig
    gbdt: GBDTConfig
    svm: SVMConfig

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Suite:
        return cls(**{f.name: config.section(cfg.get(f.name), SECTIONS[f.name]) for f in dataclasses.fields(cls)})


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
    _one_of([suite.noise.convention], noise_lib.SYMMETRIC_CONVENTIONS, "noise.convention")
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
    multilabel = noise_lib.MULTILABEL_KINDS
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


def _num_classes(dataset: Any, *labels: Tensor) -> int:
    """Classes of a task: the dataset's class list, or one more than the largest label seen."""
    largest = max(int(y.max()) for y in labels) + 1
    return max(len(getattr(dataset, "classes", []) or []), largest)


def labelled_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices of a class-balanced `fraction` of `labels` ([N]); everything for fraction 1.0."""
    limit = None if fraction >= 1.0 else max(1, round(fraction * len(labels)))
    return torch.from_numpy(balanced_subset(labels.numpy(), limit, seed))


def random_subset(n: int, fraction: float, seed: int) -> Tensor:
    """Sorted indices of a random `fraction` of `n` samples (regression and multi-label tasks)."""
    if fraction >= 1.0:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: max(1, round(fraction * n))].sort().values


def noise_settings(noise: NoiseConfig) -> list[tuple[str, float]]:
    """(kind, nominal rate) pairs: the clean setting first, then every kind x rate."""
    return [("none", 0.0)] + [(kind, float(rate)) for kind in noise.kinds for rate in noise.rates]


@dataclasses.dataclass
class TaskData:
    """One task's data once loaded: datasets, cached features and what noise needs."""

    name: str
    kind: str
    train_set: Any
    test_set: Any
    transform: Any
    train_transform: Any
    train: tuple[Tensor, Tensor]  # feats [N, D], targets [N, ...]
    test: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor] | None
    num_classes: int
    pixels: Tensor | None  # [N, d] for instance-dependent noise


def _log(message: str) -> None:
    if distributed.is_main():
        print(f"[eval] {message}", flush=True)


def load_task(name: str, task: TaskConfig, suite: Suite, backbone: nn.Module, device: str) -> TaskData:
    """Instantiate a task's datasets and extract its features once."""
    ev = suite.eval
    train_set, test_set = config.instantiate(task.train), config.instantiate(task.test)
    transform = config.instantiate(task.transform)
    extractor = config.locate(task.extractor) if task.extractor else extract_features
    start = time.perf_counter()
    train = extractor(backbone, train_set, transform, ev.batch_size, ev.num_workers, device)
    test = extractor(backbone, test_set, transform, ev.batch_size, ev.num_workers, device)
    val = None
    if task.val is not None:
        val = extractor(backbone, config.instantiate(task.val), transform, ev.batch_size, ev.num_workers, device)
    _log(f"{name}: features {tuple(train[0].shape)} train, {tuple(test[0].shape)} test "
         f"in {time.perf_counter() - start:.1f}s")
    classification = task.kind == "classification"
    pixels = None
    if classification and task.noise and "instance" in suite.noise.kinds:
        pixels = pixel_summary(train_set, transform, ev.batch_size, ev.num_workers, suite.noise.pixel_side)
    return TaskData(
        name=name, kind=task.kind, train_set=train_set, test_set=test_set, transform=transform,
        train_transform=config.instantiate(task.train_transform) if task.train_transform else transform,
        train=train, test=test, val=val, pixels=pixels,
        num_classes=_num_classes(train_set, train[1], test[1]) if classification else 0,
    )


def _cached_classification(data: TaskData, x: Tensor, y: Tensor, protocols: Sequence[str], suite: Suite,
                           seed: int, device: str) -> list[tuple[str, str, str, float]]:
    """kNN, L-BFGS linear, the robust probes, svm, mlp and gbdt on cached features.

    Returns:
        (protocol, robust, metric, value) tuples.
    """
    out = []
    x_test, y_test = data.test
    if "knn" in protocols:
        for name in suite.knn.presets:
            k, temperature = knn_lib.preset(name)
            acc = knn_lib.knn_accuracy(x, y, x_test, y_test, k=k, temperature=temperature,
                                       num_classes=data.num_classes)
            out.append((f"knn_{name}", "none", "top1", acc))
    if "linear" in protocols:
        lin = suite.linear
        result = linear_lib.linear_probe(
            x, y, x_test, y_test, lambdas=_lambdas(lin), val_fraction=lin.val_fraction, seed=seed,
            max_iter=lin.max_iter, tol=lin.tol, device=device, **_val_kwargs(data),
        )
        # λ in the mean-loss convention (sklearn C = 1 / (λ n)), kept so the selection can be audited
        out += [("linear", "none", "top1", result.test_accuracy), ("linear", "none", "lambda", result.best_lambda)]
    if "probe" in protocols:
        for method in suite.robust.methods:
            head = train_head(
                x, y, x_test, y_test, num_classes=data.num_classes, robust=method, epochs=suite.probe.epochs,
                lr=suite.probe.lr, weight_decay=suite.probe.weight_decay, batch_size=suite.probe.batch_size,
                seed=seed, device=device, loss_kwargs=getattr(suite.robust, method, None) or None,
            )
            out.append(("probe", method, "top1", head.test_accuracy))
    if "svm" in protocols:
        svm = svm_lib.svm_probe(x, y, x_test, y_test, cs=suite.svm.cs, kernel=suite.svm.kernel,
                                folds=suite.svm.folds, seed=seed)
        out += [("svm", "none", "top1", svm.test_accuracy), ("svm", "none", "cv_top1", svm.cv_accuracy),
                ("svm", "none", "C", svm.best_c)]
    return out + _heads(data, x, y, protocols, suite, seed)


def _heads(data: TaskData, x: Tensor, y: Tensor, protocols: Sequence[str], suite: Suite,
           seed: int) -> list[tuple[str, str, str, float]]:
    """The `mlp` and `gbdt` heads on cached features (scikit-learn, CPU) -> (protocol, robust, metric, value)."""
    out = []
    builders = {"mlp": (tabular_lib.make_mlp, suite.mlp), "gbdt": (tabular_lib.make_gbdt, suite.gbdt)}
    for protocol, (make, section) in builders.items():
        if protocol in protocols:
            estimator = make(data.kind, seed=seed, **dataclasses.asdict(section))
            scores = tabular_lib.fit_and_score(estimator, data.kind, x, y, *data.test)
            out += [(protocol, "none", metric, value) for metric, value in scores.items()]
    return out


def _lambdas(lin: LinearConfig) -> tuple[float, ...]:
    return linear_lib.LAMBDAS if lin.lambdas is None else tuple(float(v) for v in lin.lambdas)


def _val_kwargs(data: TaskData) -> dict:
    """The task's own validation split for λ selection, when it has one."""
    return {} if data.val is None else {"val": data.val}


def _cached_other(data: TaskData, x: Tensor, y: Tensor, protocols: Sequence[str], suite: Suite,
                  seed: int, device: str) -> list[tuple[str, str, str, float]]:
    """kNN and linear for regression (rmse, r2) and multi-label (map) tasks; mlp and gbdt for regression."""
    out = []
    x_test, y_test = data.test
    for name in suite.knn.presets if "knn" in protocols else ():
        k, temperature = knn_lib.preset(name)
        if data.kind == "regression":
            pred = knn_lib.knn_regression(x, y, x_test, k=k, temperature=temperature)
            out += [(f"knn_{name}", "none", m, v) for m, v in regression_lib.regression_metrics(pred, y_test).items()]
        else:
            scores = knn_lib.knn_multilabel_scores(x, y, x_test, k=k, temperature=temperature)
            out.append((f"knn_{name}", "none", "map", multilabel_lib.mean_average_precision(scores, y_test)))
    if "linear" in protocols:
        lin = suite.linear
        if data.kind == "regression":
            r = regression_lib.ridge_probe(x, y, x_test, y_test, lambdas=_lambdas(lin), val_fraction=lin.val_fraction,
                                           seed=seed)
            out += [("linear", "none", "rmse", r.test_rmse), ("linear", "none", "r2", r.test_r2),
                    ("linear", "none", "lambda", r.best_lambda)]
        else:
            r = multilabel_lib.multilabel_probe(x, y, x_test, y_test, lambdas=_lambdas(lin),
                                                val_fraction=lin.val_fraction, seed=seed, max_iter=lin.max_iter,
                                                tol=lin.tol, device=device)
            out += [("linear", "none", "map", r.test_map), ("linear", "none", "lambda", r.best_lambda)]
    return out + _heads(data, x, y, protocols, suite, seed)


def _trained(data: TaskData, keep: Tensor, labels: Tensor, protocols: Sequence[str], suite: Suite, seed: int,
             run_dir: Path, backbone: nn.Module, identity: dict, device: str) -> list[tuple[str, str, str, float]]:
    """linear_sgd and finetune through the engine, once per loss, on the (noisy) labelled subset."""
    out = []
    train_view = LabelledView(data.train_set, keep, labels)
    for protocol in ("linear_sgd", "finetune"):
        if protocol not in protocols:
            continue
        section: FinetuneConfig = getattr(suite, protocol)
        for loss in section.losses:
            result = finetune(
                backbone, train_view, data.test_set, train_transform=data.train_transform,
                test_transform=data.transform, num_classes=data.num_classes,
                out_dir=run_dir / f"{protocol}-{loss}", kind=data.kind, freeze_backbone=protocol == "linear_sgd",
                loss=loss,
                loss_kwargs=getattr(suite.robust, loss, None) or None,
                label_smoothing=section.label_smoothing, layer_decay=section.layer_decay,
                drop_path=section.drop_path, optimizer=section.optimizer, lr=section.lr,
                weight_decay=section.weight_decay, epochs=section.epochs, min_steps=section.min_steps, warmup_epochs=section.warmup_epochs,
                batch_size=section.batch_size, num_workers=suite.eval.num_workers, precision=section.precision,
                seed=seed, identity=identity, device=device,
            )
            out += [(protocol, loss, metric, value) for metric, value in result.metrics.items()]
    return out


def run_task(
    name: str,
    task: TaskConfig,
    suite: Suite,
    backbone: nn.Module,
    backbone_name: str,
    device: str,
    out_dir: Path,
    backbone_sha256: str = "",
    method_spec: str | None = None,
) -> list[dict[str, Any]]:
    """Extract one task's features once, then run every label fraction x seed x noise x protocol."""
    start = time.perf_counter()
    if task.kind == "retrieval":
        return _retrieval_rows(name, task, suite, backbone_name, backbone_sha256, method_spec, device)
    data = load_task(name, task, suite, backbone, device)
    protocols = task.protocols or suite.eval.protocols
    noisy_kinds = ("classification", "multilabel")
    settings = noise_settings(suite.noise) if task.kind in noisy_kinds and task.noise else [("none", 0.0)]
    rows = []
    for fraction in suite.eval.label_fractions:
        for seed in suite.eval.seeds:
            x_all, y_all = data.train
            if task.kind == "classification":
                keep = labelled_subset(y_all, float(fraction), seed)
            else:
                keep = random_subset(len(y_all), float(fraction), seed)
            x, clean = x_all[keep], y_all[keep]
            for kind, rate in settings:
                noisy = noise_lib.corrupt(
                    clean, kind, rate, data.num_classes, seed, convention=suite.noise.convention,
                    mapping=suite.noise.mapping, inputs=None if data.pixels is None else data.pixels[keep],
                ) if task.kind in noisy_kinds else None
                y = clean if noisy is None else noisy.labels
                if task.kind == "classification":
                    measured = _cached_classification(data, x, y, protocols, suite, seed, device)
                else:
                    measured = _cached_other(data, x, y, protocols, suite, seed, device)
                if task.kind in ("classification", "regression"):
                    run_dir = out_dir / "runs" / name / f"f{fraction:g}-{kind}{rate:g}-s{seed}"
                    # a run directory is resumed only for the same backbone, task and training labels
                    labels_sha256 = noisy.sha256 if noisy is not None else \
                        hashlib.sha256(y.to(torch.float64).numpy().tobytes()).hexdigest()
                    identity = {"backbone": backbone_name, "backbone_sha256": backbone_sha256,
                                "noisy_labels_sha256": labels_sha256, "task": name}
                    measured += _trained(data, keep, y, protocols, suite, seed, run_dir, backbone, identity, device)
                rows += [
                    make_row(
                        task=name, protocol=protocol, metric=metric, value=value, backbone=backbone_name,
                        backbone_sha256=backbone_sha256, seed=seed, label_fraction=fraction, noise_kind=kind,
                        noise_rate=rate, noise_rate_realised=0.0 if noisy is None else noisy.realised, robust=robust,
                    )
                    for protocol, robust, metric, value in measured
                ]
                _log(f"{name}: fraction {fraction:g}, seed {seed}, noise {kind} {rate:g} done "
                     f"({time.perf_counter() - start:.0f}s)")
    return rows


def _retrieval_rows(name: str, task: TaskConfig, suite: Suite, backbone_name: str, backbone_sha256: str,
                    method_spec: str | None, device: str) -> list[dict[str, Any]]:
    """R@K both ways on the task's test pairs, once per seed (a trained method gives the same each time)."""
    from ssl_platform.evaluation import retrieval

    if not method_spec or not (method_spec.startswith("random:") or Path(method_spec).is_dir()):
        raise ConfigError(
            f"task {name} is a retrieval task: it ranks pairs with the whole method (encoders, fusion, matching "
            f"head), which a backbone file does not hold; give backbone=RUN_DIR or random:RUN_DIR "
            f"(got {method_spec!r})"
        )
    test, transform = config.instantiate(task.test), config.instantiate(task.transform)
    rows = []
    for seed in suite.eval.seeds:
        method, _ = retrieval.method_from_spec(method_spec, seed=seed)
        scores = retrieval.retrieval_metrics(method.to(device), test, transform, batch_size=suite.eval.batch_size,
                                             device=device)
        rows += [make_row(task=name, protocol="retrieval", metric=metric, value=value, backbone=backbone_name,
                          backbone_sha256=backbone_sha256, seed=seed, label_fraction=1.0, noise_kind="none",
                          noise_rate=0.0, noise_rate_realised=0.0, robust="none")
                 for metric, value in scores.items()]
        _log(f"{name}: retrieval, seed {seed} done")
    return rows


def run_suite(
    suite_cfg: DictConfig,
    backbone: nn.Module,
    backbone_name: str,
    out_dir: str | Path,
    device: str = "cpu",
    overwrite: bool = False,
    backbone_sha256: str = "",
    method_spec: str | None = None,
) -> list[dict[str, Any]]:
    """Run a suite loaded by `load_suite` on one backbone; write results.jsonl, summary.md, plots, suite.yaml.

    Args:
        suite_cfg: from `load_suite`.
        backbone: timm contract, already on `device`.
        backbone_name: the `backbone` value of every row (run dir name, zoo name, "random").
        out_dir: created if needed; results are appended task by task, so a crash keeps finished tasks.
            Fine-tuning runs live in `out_dir/runs/` (resumable engine run directories).
        device: where features are extracted and probes fitted (kNN runs in faiss on the CPU).
        overwrite: replace earlier results (and fine-tuning runs) instead of refusing.
        backbone_sha256: the backbone file's sha256 ("" for a random init), written into every row.
        method_spec: the `backbone=` value it came from (`RUN_DIR`, `random:RUN_DIR`): retrieval tasks
            rebuild the whole method from it.

    Returns:
        The rows written to results.jsonl.
    """
    out_dir = Path(out_dir)
    with own_run_dir(out_dir, "evaluation run"):  # a second eval into out_dir would mix results.jsonl
        results = out_dir / RESULTS_FILE
        if results.exists() and not overwrite:
            raise FileExistsError(
                f"{results} already exists; pass another out_dir=..., or overwrite=true to replace it "
                "(appending would mix two runs)"
            )
        distributed.barrier()  # every rank has seen the old file before rank 0 removes it
        if distributed.is_main():
            if results.exists():
                results.unlink()
                for old in ("runs", "plots"):  # fine-tuning runs and plots of the replaced results
                    shutil.rmtree(out_dir / old, ignore_errors=True)
            out_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(out_dir / "suite.yaml", OmegaConf.to_yaml(suite_cfg, resolve=True).encode())
        distributed.barrier()
        suite = Suite.from_config(suite_cfg)
        rows = []
        for name, task in suite_cfg.tasks.items():
            task_rows = run_task(str(name), config.section(task, TaskConfig), suite, backbone, backbone_name, device,
                                 out_dir, backbone_sha256, method_spec)
            if distributed.is_main():
                append_rows(results, task_rows)
            rows += task_rows
        if distributed.is_main():
            write_report(out_dir, rows)
        distributed.barrier()
        return rows
