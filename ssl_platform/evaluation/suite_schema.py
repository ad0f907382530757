"""The schema of an evaluation suite (`eval/*.yaml`, described in `suite.py`): one dataclass per
section with its keys, types and defaults, and `Suite`, the loaded sections as plain values.

Pure data: `suite_validation.load_suite` checks a suite against these classes (unknown keys, types)
and makes every check of the values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig

from ssl_platform import config
from ssl_platform.evaluation import knn as knn_lib
from ssl_platform.evaluation import svm as svm_lib


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
# validated by `suite_validation` rather than by config.validate: task names are the user's, and
# random_backbone's keys are create_backbone/timm kwargs
OWN_KEYS = ("tasks", "random_backbone")


@dataclasses.dataclass
class Suite:
    """A loaded suite as plain values: every section but `tasks`, what each protocol reads."""

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
