"""`sslp pretrain RECIPE [k=v ...]`: compose a recipe's components in Python and call `fit`.

This is the only place that knows a pretraining recipe's sections; `engine/` receives plain values.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from omegaconf import DictConfig, OmegaConf

from ssl_platform import config, distributed, preflight
from ssl_platform.data.collate import TransformedDataset, count_skipped
from ssl_platform.data.transforms.device_inputs import stack_device_inputs, views_from_batch
from ssl_platform.engine.rng import seed_everything
from ssl_platform.engine.run_dir import own_run_dir
from ssl_platform.engine.trackers import check_installed, parse_loggers
from ssl_platform.engine.trainer import TrainConfig, fit
from ssl_platform.evaluation.knn import knn_accuracy
from ssl_platform.features import embed_dataset


@dataclasses.dataclass
class DataConfig:
    """The `data:` section. `dataset` and `transform` are components; batch_size is per process.

    `on_bad_sample`: `error` stops the run at a sample that cannot be read, naming its file; `skip`
    replaces it by the next good one (same seed, so resumption stays exact) and logs it in
    `<out_dir>/skipped_samples.jsonl`.

    `views_on`: where an image transform makes its views. `workers`: per sample in the loader's workers
    (PIL, lightly's transforms). `device`: the workers only read uint8 pixels and draw each sample's view
    parameters; the crops, flips, colour jitter, blur... run per batch on the training device
    (`data/transforms/device_views.py`; the transform needs a `for_device` half, as `SimCLRViews` and
    `SupervisedTransform` have). The draws differ between the two, so a run keeps the one it started with.
    """

    dataset: Any
    transform: Any = None
    collate: Any = None
    batch_size: int = config.option(256, ge=1)
    num_workers: int = config.option(4, ge=0)
    on_bad_sample: Literal["error", "skip"] = "error"
    views_on: Literal["workers", "device"] = "workers"


@dataclasses.dataclass
class MonitorConfig:
    """The `monitor:` section: an online kNN on a held-out split every `knn_every_epochs` (0 = off).

    `dataset` is the kNN bank (labelled training images), `val_dataset` the held-out queries, both
    read through `transform` (an eval transform) and embedded by the method's `embed`. Every rank
    embeds its share of them; rank 0 logs the accuracy.
    """

    knn_every_epochs: int = config.option(0, ge=0)
    dataset: Any = None
    val_dataset: Any = None
    transform: Any = None
    k: int = config.option(20, ge=1)
    temperature: float = config.option(0.07, gt=0)
    # extra experiment trackers besides TensorBoard, off by default: a list of tracker names or
    # {name: ..., options} mappings, read by `engine.logging.RunLogger` from the recipe
    loggers: Any = None


@dataclasses.dataclass
class SourceConfig:
    """The `source:` section: where a recipe's settings come from. Read by people and by
    `tests/test_recipe_provenance.py`, never by the run (changing it does not block a resume).

    A recipe that claims a paper's setting names it (`paper`: citation and table; `code`: the official
    config as `owner/repo@commit:path`) and lists in the recipe's `paper:` section the values it takes
    from there, keyed as `recipe_settings.effective_settings` names them (e.g. `optimizer.peak_lr`,
    `method.temperature`): `key: value`, or `key: {paper: value, ours: value, why: reason}` where the
    recipe deliberately differs. A recipe of our own says so in `note` and has no `paper:` section.
    `world_size` is the number of processes the recipe is written for (its header's torchrun command):
    the global batch and the scaled lr follow from it.
    """

    paper: str | None = None
    code: str | None = None
    note: str | None = None
    world_size: int = config.option(1, ge=1)


SECTIONS = {
    "before": "recipe",  # a whole recipe run (or resumed, or found finished) before this one: a first stage
    "source": SourceConfig,
    "paper": dict,
    "name": str,
    "method": "component",
    "data": DataConfig,
    "optimizer": "component",
    "train": TrainConfig,
    "monitor": MonitorConfig,
}
RUNTIME = {"optimizer": ("params",)}
SKIP_LOG = "skipped_samples.jsonl"  # data.on_bad_sample=skip: one JSON line per bad sample drawn


def load_recipe(path: str | Path, overrides: list[str] = ()) -> DictConfig:
    """Load, override and validate a pretraining recipe; fill in `train` defaults and `out_dir`.

    A recipe may hold a first stage under `before:` (a whole recipe, e.g. G-SimCLR's autoencoder);
    its `train.out_dir` defaults to `<out_dir>/<before.name>`, which the second stage can name with
    the interpolation `${before.train.out_dir}`.
    """
    cfg = config.load(path, overrides)
    with config.naming_keys(f"recipe {path}"):
        config.validate(cfg, SECTIONS, RUNTIME)
        _complete(cfg, str(path), Path("runs"))
    config.resolve_all(cfg, f"recipe {path}")
    _check_optimizer(cfg)
    # monitor.loggers: names and options, and that the libraries are installed (a --dry-run says so too)
    check_installed(parse_loggers(cfg.monitor.loggers))
    return cfg


def required_keys(path: str | Path) -> list[str]:
    """Dotted keys a recipe file leaves to its user (`???`, e.g. a data root), read without resolving
    interpolations (a recipe may point at a value `load_recipe` fills in, e.g. `${before.train.out_dir}`)."""

    def walk(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict):
            return [k for key, value in node.items() for k in walk(value, f"{prefix}{key}.")]
        return [prefix.rstrip(".")] if node == "???" else []

    return sorted(walk(OmegaConf.to_container(OmegaConf.load(path), resolve=False), ""))


def _check_optimizer(cfg: DictConfig, prefix: str = "") -> None:
    """Build the recipe's optimizer over one dummy parameter: its own range checks (a negative lr, betas
    outside [0, 1)...) then fail in `--dry-run` too, naming the section, instead of after the model is built."""
    if cfg.get("before") is not None:
        _check_optimizer(cfg.before, f"{prefix}before.")
    try:
        probe_optimizer(cfg.optimizer, where=f"{prefix}optimizer.")
    except config.ConfigError as err:
        raise config.ConfigError(f"{prefix}optimizer: {err}") from None


def probe_optimizer(node: Any, where: str = "optimizer.") -> torch.optim.Optimizer:
    """The recipe's optimizer built over one dummy parameter: its checks run, and its `defaults` hold
    every setting, the library's own defaults included."""
    return config.instantiate(node, where=where, params=[torch.nn.Parameter(torch.zeros(1))])


def _complete(cfg: DictConfig, where: str, parent_dir: Path, prefix: str = "") -> None:
    for key in ("name", "method", "data", "optimizer"):
        if cfg.get(key) is None:
            raise config.ConfigError(f"recipe {where} has no {prefix}{key!r}; every pretraining recipe needs {key}")
    train = dataclasses.asdict(config.section(cfg.get("train"), TrainConfig))
    if train["out_dir"] is None:
        train["out_dir"] = str(parent_dir / str(cfg.name))
    cfg.train = train
    cfg.monitor = dataclasses.asdict(config.section(cfg.get("monitor"), MonitorConfig))
    cfg.data = dataclasses.asdict(config.section(cfg.data, DataConfig))
    if cfg.get("before") is not None:
        _complete(cfg.before, where, Path(train["out_dir"]), prefix=f"{prefix}before.")


def device_halves(transform: Any, collate_fn: Callable | None) -> tuple[Any, Callable, Callable]:
    """`data.views_on: device`: (the workers' transform, the batch transform on the device, the collate)."""
    if not hasattr(transform, "for_device"):
        raise config.ConfigError(
            f"data.views_on=device: the transform {type(transform).__name__} has no device half (a `for_device` "
            "method, as SimCLRViews and SupervisedTransform have); set data.views_on=workers")
    workers, views = transform.for_device()
    inputs = getattr(workers, "inputs", workers)  # an image-text transform's image half
    return (workers, functools.partial(views_from_batch, views, channels=inputs.channels, load_size=inputs.load_size),
            collate_fn or stack_device_inputs)


def describe(cfg: DictConfig) -> str:
    """The resolved recipe as YAML (what `--dry-run` prints and the run keeps as config.yaml)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def build_monitor(monitor: MonitorConfig, device: str):
    """`(method, epoch) -> {"knn_top1": %}` on the held-out split (features: `method.embed`), or None when off."""
    if not monitor.knn_every_epochs:
        return None
    if monitor.dataset is None or monitor.val_dataset is None or monitor.transform is None:
        raise config.ConfigError(
            "monitor.knn_every_epochs > 0 needs monitor.dataset, monitor.val_dataset and monitor.transform"
        )
    bank = config.instantiate(monitor.dataset)
    queries = config.instantiate(monitor.val_dataset)
    transform = config.instantiate(monitor.transform)
    num_classes = int(max(bank.targets.max(), queries.targets.max())) + 1

    def run(method, epoch: int) -> dict[str, float]:
        xb, yb = embed_dataset(method, bank, transform, embed=method.embed, device=device, caller="monitor.dataset")
        xq, yq = embed_dataset(method, queries, transform, embed=method.embed, device=device,
                               caller="monitor.val_dataset")
        acc = knn_accuracy(xb, yb, xq, yq, k=monitor.k, temperature=monitor.temperature, num_classes=num_classes)
        return {"knn_top1": acc}

    return run


def run(cfg: DictConfig) -> dict[str, Any]:
    """Check a validated recipe before any work (`preflight.check_recipe`: data paths, channels and
    sizes against the backbone, its `before:` stage too), then build every component and train.

    A finished first stage is resumed at its last step, which only exports its backbone again, so
    re-running the same command after an interruption anywhere continues where it stopped.
    """
    preflight.check_recipe(cfg)
    return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, Any]:
    """`run` without the checks: the `before:` stage first, then this recipe."""
    if cfg.get("before") is not None:
        first = _run(cfg.before)
        if distributed.is_main():
            print(f"[ssl_platform] first stage {cfg.before.name} done at step {first['step']}: {first['out_dir']}",
                  flush=True)
    train = config.section(cfg.train, TrainConfig)
    data = config.section(cfg.data, DataConfig)
    monitor = config.section(cfg.monitor, MonitorConfig)
    device = distributed.init_from_env(train.collective_timeout_minutes)
    skip_log = Path(train.out_dir) / SKIP_LOG
    # the run directory is held from here: building a method may already write into it (M3AE's tokenizer)
    with own_run_dir(Path(train.out_dir)):
        seed_everything(train.seed)  # before the method is built: its random init is part of the recipe
        method = config.instantiate(cfg.method, where="method.")
        transform = config.instantiate(data.transform, where="data.transform.")
        collate_fn = config.instantiate(data.collate, where="data.collate.")
        batch_transform = None
        if data.views_on == "device":
            transform, batch_transform, collate_fn = device_halves(transform, collate_fn)
        source = config.instantiate(data.dataset, where="data.dataset.")
        if batch_transform is not None and device.type == "cuda" and hasattr(source, "encoded"):
            source.encoded = True  # a GPU decodes the JPEGs (nvJPEG); the workers only read the files
        dataset = TransformedDataset(source, transform, on_bad_sample=data.on_bad_sample, skip_log=skip_log)
        result = fit(
            method,
            dataset,
            lambda groups: config.instantiate(cfg.optimizer, where="optimizer.", params=groups),
            train,
            out_dir=train.out_dir,
            batch_size=data.batch_size,
            num_workers=data.num_workers,
            collate_fn=collate_fn,
            batch_transform=batch_transform,
            recipe=config.to_plain(cfg),
            monitor=build_monitor(monitor, str(device)),
            monitor_every_epochs=monitor.knn_every_epochs,
        )
    skipped = count_skipped(skip_log)
    if skipped and distributed.is_main():
        print(f"[ssl_platform] data.on_bad_sample=skip: {skipped} bad samples were replaced by the next good one; "
              f"each is listed in {skip_log}", flush=True)
    return result
