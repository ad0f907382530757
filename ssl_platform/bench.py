"""`sslp bench RECIPE [k=v ...] --steps N`: how fast the engine trains a recipe, against what it could be.

Four measurements of one recipe, in one process, one after the other, on this machine:

- `engine`: the recipe through `pretrain.run` (the real engine: loader, per-sample seeds, device views,
  the step flags, logging), samples/s of each step read from the run's metrics;
- `plain`: the loop a user writes from lightly's examples, kept here as the reference (`plain_loop`):
  a shuffled `DataLoader` over the same data set with the recipe's transform made per sample in the
  workers (PIL, torch's own worker seeding), the same method (model and loss), batch, optimizer and
  number format (`torch.autocast` where the recipe's `train.precision` asks for it), `zero_grad /
  backward / step`, nothing else;
- `model_only`: the method's step alone on one pre-made batch, with the engine's settings (the ceiling:
  what the engine would reach if its input cost nothing);
- `input_only`: the engine's input pipeline alone (loader, workers, batch transform), samples/s and
  per worker.

Each is the median over the steps after `warmup`; the ratios `engine_vs_plain` and
`engine_vs_ceiling` are of those medians. A sample is one dataset item (an image with all its views).
Timings are wall clock; on CUDA the step is synchronised before its clock stops (only here).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ssl_platform import config, pretrain
from ssl_platform.data.collate import TransformedDataset, collate
from ssl_platform.data.samplers import ResumableSampler
from ssl_platform.engine.devices import (
    autocast,
    place_batch_transform,
    prefetch,
    resolve_precision,
    to_device,
)
from ssl_platform.engine.optim import scale_lr
from ssl_platform.engine.rng import seed_everything
from ssl_platform.provenance import git_sha


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_rate(times: list[float], batch: int, warmup: int) -> float:
    timed = times[warmup:]
    if not timed:
        raise ValueError(f"--steps {len(times)} leaves no timed step after {warmup} warm-up steps; raise --steps")
    return batch / statistics.median(timed)


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _components(cfg: DictConfig, views_on: str | None = None) -> dict[str, Any]:
    """The recipe's method, optimizer, data set, worker transform and batch transform, built as `pretrain.run` does."""
    data = config.section(cfg.data, pretrain.DataConfig)
    seed_everything(cfg.train.seed)
    method = config.instantiate(cfg.method, where="method.")
    transform = config.instantiate(data.transform, where="data.transform.")
    collate_fn = config.instantiate(data.collate, where="data.collate.") or collate
    batch_transform = None
    if (views_on or data.views_on) == "device":
        transform, batch_transform, collate_fn = pretrain.device_halves(transform, collate_fn)
    dataset = config.instantiate(data.dataset, where="data.dataset.")
    return {"method": method, "transform": transform, "collate": collate_fn, "batch_transform": batch_transform,
            "dataset": dataset, "batch_size": data.batch_size, "num_workers": data.num_workers}


def _optimizer(cfg: DictConfig, method: torch.nn.Module, batch_size: int) -> torch.optim.Optimizer:
    optimizer = config.instantiate(cfg.optimizer, where="optimizer.", params=method.param_groups())
    for group in optimizer.param_groups:  # the engine's peak lr, so every loop takes the same steps
        group["lr"] = scale_lr(group["lr"], batch_size, cfg.train.lr_scaling)
    return optimizer


def engine_rate(recipe: str, overrides: list[str], steps: int, warmup: int) -> float:
    """Samples/s of the real engine (median of its per-step `samples_per_s` after `warmup`), the recipe
    run in a temporary directory (loaded with that directory, so paths that follow it do too)."""
    with tempfile.TemporaryDirectory() as tmp:
        pretrain.run(pretrain.load_recipe(recipe, [
            *overrides, f"train.out_dir={tmp}/run", f"train.max_steps={steps}", "train.resume=never",
            "train.log_every_steps=1", f"train.save_every_steps={steps}", "monitor.knn_every_epochs=0"]))
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r][warmup:]
    if not rates:
        raise ValueError(f"--steps {steps} leaves no timed step after {warmup} warm-up steps; raise --steps")
    return statistics.median(rates)


class _Unseeded(torch.utils.data.Dataset):
    """What a user's dataset does: `transform(image)` with whatever RNG the worker has, `(views, label)`."""

    def __init__(self, dataset: Any, transform: Callable | None):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample, label = self.dataset[index]
        out = self.transform(sample) if self.transform is not None else (sample if isinstance(sample, dict) else {"image": sample})
        return {**out, "label": label, "index": index}


def plain_loop(cfg: DictConfig, steps: int, device: torch.device) -> list[float]:
    """The reference loop (lightly's examples): per-step wall times of `steps` steps."""
    parts = _components(cfg, views_on="workers")
    method, batch = parts["method"].to(device), parts["batch_size"]
    optimizer = _optimizer(cfg, method, batch)
    loader = DataLoader(_Unseeded(parts["dataset"], parts["transform"]), batch_size=batch, shuffle=True,
                        drop_last=True, num_workers=parts["num_workers"], collate_fn=parts["collate"],
                        pin_memory=device.type == "cuda")
    times, batches = [], _cycle(loader)
    method.train()
    for _ in range(steps):
        start = time.perf_counter()
        b = to_device(next(batches), device)
        with _autocast(cfg, device):
            loss = method(b)["loss"]
        optimizer.zero_grad()
        loss.backward()
        _clip(method, cfg)
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _autocast(cfg: DictConfig, device: torch.device) -> torch.autocast:
    """The recipe's number format for the forward pass, as the engine applies it: every loop of the
    benchmark computes in the same precision, so no ratio credits bf16 to one side."""
    return autocast(device, resolve_precision(cfg.train.precision, device))


def _clip(method: torch.nn.Module, cfg: DictConfig) -> None:
    """The recipe's gradient clipping (`train.clip_grad`), which the plain loop and the ceiling do as the
    engine does: the same training step, so the ratios measure the engine, not a skipped clip."""
    if cfg.train.get("clip_grad") is not None:
        torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.train.clip_grad)


def _cycle(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def _engine_batches(parts: dict, cfg: DictConfig, device: torch.device) -> Iterator:
    """The engine's input pipeline, endlessly: its loader, with the batch transform where the trainer puts it."""
    dataset = TransformedDataset(parts["dataset"], parts["transform"])
    sampler = ResumableSampler(len(dataset), seed=cfg.train.seed, drop_last=True)
    collate_fn, transform = place_batch_transform(parts["collate"], parts["batch_transform"], device,
                                                  parts["num_workers"])
    loader = DataLoader(dataset, batch_size=parts["batch_size"], sampler=sampler, drop_last=True,
                        num_workers=parts["num_workers"], collate_fn=collate_fn, pin_memory=device.type == "cuda")
    return prefetch(_cycle(loader), device, bool(cfg.train.channels_last), transform)


def model_only(cfg: DictConfig, steps: int, device: torch.device) -> list[float]:
    """Per-step wall times of the method's step on one pre-made batch, with the engine's precision and layout."""
    parts = _components(cfg)
    method = parts["method"].to(device)
    channels_last = bool(cfg.train.channels_last)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer = _optimizer(cfg, method, parts["batch_size"])
    batch = next(_engine_batches(parts, cfg, device))
    times = []
    method.train()
    for _ in range(steps):
        start = time.perf_counter()
        with _autocast(cfg, device):
            loss = method(batch)["loss"]
        loss.backward()
        _clip(method, cfg)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def input_only(cfg: DictConfig, steps: int, device: torch.device) -> list[float]:
    """Per-batch wall times of the engine's input pipeline alone (loader, workers, batch transform)."""
    parts = _components(cfg)
    batches = _engine_batches(parts, cfg, device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        next(batches)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def bench(recipe: str, overrides: list[str] = (), steps: int = 20, warmup: int = 5) -> dict[str, Any]:
    """All four measurements of one recipe and their ratios (the keys of `sslp bench`'s JSON line)."""
    cfg = pretrain.load_recipe(recipe, list(overrides))
    device = _device()
    batch, workers = cfg.data.batch_size, cfg.data.num_workers
    result: dict[str, Any] = {"recipe": recipe, "overrides": list(overrides), "git": git_sha(),
                              "device": torch.cuda.get_device_name() if device.type == "cuda" else
                              f"cpu x{torch.get_num_threads()} threads",
                              "batch_size": batch, "num_workers": workers, "views_on": cfg.data.views_on,
                              "steps": steps, "warmup": warmup}
    result["engine"] = engine_rate(recipe, list(overrides), steps, warmup)
    result["plain"] = _median_rate(plain_loop(cfg, steps, device), batch, warmup)
    result["model_only"] = _median_rate(model_only(cfg, steps, device), batch, warmup)
    result["input_only"] = _median_rate(input_only(cfg, steps, device), batch, warmup)
    result["input_per_worker"] = result["input_only"] / max(1, workers)
    result["engine_vs_plain"] = result["engine"] / result["plain"]
    result["engine_vs_ceiling"] = result["engine"] / result["model_only"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def table(result: dict[str, Any]) -> str:
    """The human-readable lines `sslp bench` prints before its JSON line."""
    head = (f"{result['recipe']} (batch {result['batch_size']}, {result['num_workers']} workers, views on "
            f"{result['views_on']}, {result['device']}, git {result['git']}), "
            f"median of {result['steps'] - result['warmup']} steps:")
    return "\n".join([
        head,
        f"  engine      {result['engine']:10.1f} samples/s",
        f"  plain loop  {result['plain']:10.1f} samples/s   engine / plain   = {result['engine_vs_plain']:.2f}x",
        f"  model only  {result['model_only']:10.1f} samples/s   engine / ceiling = {result['engine_vs_ceiling']:.2f}",
        f"  input only  {result['input_only']:10.1f} samples/s   ({result['input_per_worker']:.1f} per worker)",
    ])
