"""Loading a suite: `load_suite` reads `eval/<suite>.yaml` with `key=value` overrides and makes every
check of it, so that a wrong key or value fails before any feature is extracted, naming the key and
saying what to write instead.

The checks, in order: the keys of every section against its dataclass (`suite_schema`, through
`config.validate`), the tasks' keys and components, `random_backbone`'s timm kwargs, interpolations,
then the values: ranges, names of protocols, presets, noise kinds, losses and optimizers, and what
each task kind can run (`protocols.KIND_PROTOCOLS`).

Two more checks run before a suite does, each listing every problem it finds: `check_suite_data`
(the tasks' data paths on disk, by the rule of `data/root.py`; before any backbone is loaded) and
`check_backbone_fit` (each task's transforms against a loaded backbone: channels, a ViT's patch and
fixed size, a CNN's strides, and the mean / std a zoo backbone records). The second reads the
transforms by running them on synthetic samples (`probe_transform`), so it checks what they make,
defaults included, not what their kwargs are called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn

from ssl_platform import config
from ssl_platform.config import ConfigError
from ssl_platform.data.prepare import NAMES as PREPARED
from ssl_platform.data.root import data_problems
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
from ssl_platform.models.backbones import check_timm_kwargs, spec
from ssl_platform.models.input_fit import fit_problems, input_facts, meta_copy, stride_problem


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


# ---- before a suite runs: data on disk, and each task's images against the backbone

TASK_DATA = ("train", "val", "test", "transform", "train_transform")
# the zoo's `load_backbone` sets `pretrained_cfg` from the entry (zoo/index.py `pretrained_cfg`); any other
# pretrained_cfg is timm's default for the architecture (ImageNet weights we never load), not a record
ZOO_RECORD = "ssl_platform zoo"


def _raise(problems: list[str], what: str) -> None:
    if problems:
        raise ConfigError(f"{what} ({len(problems)} problem{'s' if len(problems) > 1 else ''} found before any "
                          "work):\n" + "\n".join(f"  - {p}" for p in problems))


def check_suite_data(cfg: DictConfig) -> None:
    """Every data path of every task (dataset roots, manifests, tokenizer files...) exists, by the rule of
    `data/root.py`. Raises ConfigError listing the missing ones."""
    nodes = {f"tasks.{name}.{key}": config.to_plain(task.get(key)) for name, task in cfg.tasks.items()
             for key in TASK_DATA}
    _raise(data_problems(nodes, prepared=PREPARED), f"suite {cfg.get('name')} cannot run")


@dataclasses.dataclass
class ImageProbe:
    """What a transform makes of synthetic samples: channels, size (None: it keeps the input's) and the
    per-channel mean / std it normalises with (None: not measurable, e.g. tensors in, tensors out)."""

    channels: int
    size: tuple[int, int] | None
    mean: list[float] | None
    std: list[float] | None


def _image_of(out: Any) -> torch.Tensor | None:
    """The `[C, H, W]` image in a transform's output (a tensor, a dict's `image`, a list's first view)."""
    if isinstance(out, dict):
        out = out.get("image")
    elif isinstance(out, (list, tuple)) and out:
        out = out[0]
    return out if isinstance(out, torch.Tensor) and out.ndim == 3 else None


SAMPLES = {  # (H, W, grey value 0..255, channels) -> a sample of each kind an image transform may read
    "PIL image": lambda h, w, v, c: Image.new("RGB", (w, h), (v, v, v)),
    "image-text pair": lambda h, w, v, c: {"image": Image.new("RGB", (w, h), (v, v, v)), "text": "probe"},
    "tensor": lambda h, w, v, c: torch.full((c, h, w), v / 255.0),
}


def _outputs(transform: Any, make: Any, in_chans: int) -> list[torch.Tensor | None] | None:
    """The images `transform` makes of black and white samples at two sizes, or None if it refuses them."""
    try:
        return [_image_of(transform(make(h, w, v, in_chans))) for h, w in ((40, 48), (53, 37)) for v in (0, 255)]
    except Exception:  # noqa: BLE001 - a probe: a transform that refuses this kind of sample reads another
        return None


def probe_transform(transform: Any, in_chans: int) -> ImageProbe | None:
    """Run `transform` on black and white samples of two sizes; None when it makes no image of any kind
    in `SAMPLES` (graphs, tables). A normalising transform maps black to -mean/std and white to
    (1 - mean)/std, which gives both back."""
    for make in SAMPLES.values():
        outs = _outputs(transform, make, in_chans)
        if outs is None or any(o is None for o in outs):
            continue
        size = tuple(outs[0].shape[-2:]) if outs[0].shape == outs[2].shape else None
        if make is SAMPLES["tensor"]:
            return ImageProbe(outs[0].shape[0], size, None, None)
        black, white = outs[0].float().mean((1, 2)), outs[1].float().mean((1, 2))
        std = 1.0 / (white - black)
        return ImageProbe(outs[0].shape[0], size, (-black * std).tolist(), std.tolist())
    return None


def _recorded(backbone: nn.Module) -> tuple[list[float], list[float]] | None:
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    if str(cfg.get("description", "")).startswith(ZOO_RECORD) and cfg.get("mean") and cfg.get("std"):
        return [float(v) for v in cfg["mean"]], [float(v) for v in cfg["std"]]
    return None


def _shown(size: tuple[int, int] | None) -> str:
    return "?" if size is None else str(size[0]) if size[0] == size[1] else f"[{size[0]}, {size[1]}]"


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-3 for x, y in zip(a, b))


def backbone_fit_problems(cfg: DictConfig, backbone: nn.Module, backbone_name: str) -> list[str]:
    """What `check_backbone_fit` raises, as a list."""
    facts = input_facts(backbone)
    model = f"backbone {backbone_name} ({spec(backbone).get('name', type(backbone).__name__)}, in_chans={facts.in_chans})"
    meta = meta_copy(backbone) if facts.patch is None else None
    recorded, problems = _recorded(backbone), []
    for name, task in cfg.tasks.items():
        for key in ("transform", "train_transform"):
            node, where = task.get(key), f"tasks.{name}.{key}"
            if not config.is_component(node):
                continue
            try:
                transform = config.instantiate(node, where=f"{where}.")
            except (ConfigError, OSError):  # check_suite_data names missing files; load_task fails the same way
                continue
            probe = probe_transform(transform, facts.in_chans or 3)
            if probe is None:
                continue
            fixes = {"channels": f"set {where}.channels={facts.in_chans}, or evaluate a backbone pretrained on "
                                 f"{probe.channels}-channel images",
                     "patch": f"set {where}.size to such a side", "fixed_size": f"set {where}.size={_shown(facts.fixed_size)}",
                     "strides": f"use larger images ({where}.size)"}
            found = fit_problems(facts, probe.channels, probe.size, where, model)
            problems += [f"{text}; {fixes[kind]}" for kind, text in found]
            if not found and meta is not None and probe.size is not None and facts.in_chans:
                too_small = stride_problem(meta, facts.in_chans, probe.size, where, model)
                problems += [f"{too_small}; {fixes['strides']}"] if too_small else []
            if key == "transform" and recorded and probe.mean is not None and not (
                    _close(probe.mean, recorded[0]) and _close(probe.std, recorded[1])):
                mean, std = ([round(v, 4) for v in values] for values in (probe.mean, probe.std))
                problems.append(f"{where} normalises with mean={mean}, std={std}, but {model} was pretrained with "
                                f"mean={recorded[0]}, std={recorded[1]} (its zoo entry); set {where}.mean and "
                                f"{where}.std to those")
    return problems


def check_backbone_fit(cfg: DictConfig, backbone: nn.Module, backbone_name: str) -> None:
    """Each task's transforms against `backbone` (see the module docstring); call it once the backbone
    is loaded, before `run_suite`. Raises ConfigError listing every problem."""
    _raise(backbone_fit_problems(cfg, backbone, backbone_name),
           f"suite {cfg.get('name')} cannot evaluate backbone {backbone_name}")
