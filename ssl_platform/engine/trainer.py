"""The one training loop. Every method trains through `fit`; nothing here knows which method it is.

`fit` owns the mechanics: process group and DDP, devices and precision, the per-step lr and
weight-decay schedules, gradient accumulation and clipping, logging, when to save a checkpoint and
what it holds for exact resumption. The method owns the math (`forward` returns the loss) and is
called only through the hooks `methods.base.Method` declares, each with its default there.

The host never waits for the device on a plain step: batches are copied to the device ahead of the
step that uses them (`devices.prefetch`), the flags every rank acts on are read one micro-step late
(`step_flags.py`), and losses are summed on the device until a log step reads them.

What a run does to its directory (the lock, config.yaml, last.pt, the backbone export, whether a
checkpoint may be resumed) is in `run_dir.py`; the stop signals are in `preemption.py`. Every rank
acts on a stop signal, a non-finite loss (`NonFiniteLossError`) or rank 0's save clock at the same
step; a collective that times out names the ranks it waited for (`CollectiveTimeoutError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ssl_platform import distributed
from ssl_platform.checkpoint.io import load_state_strict
from ssl_platform.config import option
from ssl_platform.data.collate import collate
from ssl_platform.data.samplers import ResumableSampler
from ssl_platform.engine.devices import autocast, place_batch_transform, prefetch, resolve_precision
from ssl_platform.engine.logging import RunLogger, log_step, run_monitor
from ssl_platform.engine.optim import scale_lr
from ssl_platform.engine.preemption import (
    RunInterrupted,
    StopRequest,
    catch_stop_signals,
    ignore_stop_signals,
    stop_workers,
)
from ssl_platform.engine.rng import rng_state, seed_everything, set_rng_state
from ssl_platform.engine.run_dir import (
    export_once,
    load_resume_state,
    own_run_dir,
    resume_position,
    save_last,
    start_run_dir,
)
from ssl_platform.engine.sample_log import SampleLog
from ssl_platform.engine.schedules import cosine, warmup_cosine
from ssl_platform.engine.step_flags import StepFlags

_clock = time.monotonic  # rank 0's clock for train.save_every_minutes (a module attribute: tests replace it)


@dataclasses.dataclass
class TrainConfig:
    """The `train:` section of a recipe. Steps are optimizer steps (after accumulation).

    Types and `option` ranges are checked by `config.validate` before any work starts.
    """

    epochs: int = option(100, ge=1)
    max_steps: int | None = option(None, ge=1)  # stop early after this many steps; the schedule still spans `epochs`
    warmup_epochs: float = option(10.0, ge=0)
    min_lr: float = option(0.0, ge=0, le=1)  # final lr as a fraction of the peak
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"  # recipe lr is per 256 samples of global batch
    weight_decay_end: float | None = option(None, ge=0)  # cosine weight-decay schedule to this value; None: constant
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    accum_steps: int = option(1, ge=1)
    clip_grad: float | None = option(None, gt=0)  # max global grad norm
    seed: int = option(0, ge=0)
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)
    out_dir: str | None = None  # default runs/<name>
    resume: str = "auto"  # auto: continue from <out_dir>/checkpoints/last.pt if present | never | a path
    save_every_steps: int = option(500, ge=1)
    save_every_minutes: float | None = option(None, gt=0)  # also save once this long passed since the last save
    log_every_steps: int = option(10, ge=1)
    log_samples: bool = False  # <out_dir>/samples/rank<R>.jsonl: every micro-step's sample indices (engine/sample_log.py)
    # a collective waiting longer fails, naming the ranks it waited for; None: $SSLP_COLLECTIVE_TIMEOUT_MINUTES, else 10
    collective_timeout_minutes: float | None = option(None, gt=0)


def _train_loader(method: nn.Module, dataset: Dataset, cfg: TrainConfig, batch_size: int, num_workers: int,
                  collate_fn: Callable, device: torch.device, out_dir: Path,
                  sample_order: str = "global") -> tuple[DataLoader, Any]:
    """The training loader and its sampler (`set_epoch`, `set_start`, `batches_per_epoch`): the method's
    `make_batch_sampler` (when it decides what a batch holds), or when it gives None `ResumableSampler`'s shuffle
    (`sample_order` "strided": the order of runs written before the global order, see run_dir.SAMPLE_ORDERS)."""
    common = {
        "num_workers": num_workers, "collate_fn": collate_fn, "pin_memory": device.type == "cuda",
        # workers' own seeds are irrelevant (each draw carries its seed); a private generator keeps
        # the DataLoader from consuming the training RNG when it starts an epoch
        "generator": torch.Generator().manual_seed(cfg.seed),
        "worker_init_fn": ignore_stop_signals,
    }
    sampler = method.make_batch_sampler(dataset, batch_size=batch_size, num_replicas=distributed.world_size(),
                                        rank=distributed.rank(), seed=cfg.seed, out_dir=out_dir)
    if sampler is not None:
        return DataLoader(dataset, batch_sampler=sampler, **common), sampler
    sampler = ResumableSampler(len(dataset), distributed.world_size(), distributed.rank(), shuffle=True,
                               seed=cfg.seed, drop_last=True, batch_size=batch_size if sample_order == "global" else 1)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **common), sampler


def fit(
    method: nn.Module,
    dataset: Dataset,
    make_optimizer: Callable[[list[dict]], torch.optim.Optimizer],
    cfg: TrainConfig,
    *,
    out_dir: str | Path,
    batch_size: int,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    batch_transform: Callable[[dict], dict] | None = None,
    recipe: dict | None = None,
    monitor: Callable[[nn.Module, int], dict[str, float]] | None = None,
    monitor_every_epochs: int = 0,
) -> dict[str, Any]:
    """Train `method` on `dataset` until `cfg.epochs` (or `cfg.max_steps`) and export its backbone.

    Args:
        method: a `methods.base.Method` (forward(batch) -> {"loss", ...}, and the hooks it declares);
            its `backbone` is exported at the end.
        dataset: indexed by `(index, seed)` pairs (see `TransformedDataset`), returning batch dicts.
        make_optimizer: param groups -> optimizer; the groups' lr is the recipe's per-256 value and is
            rescaled here by the global batch.
        cfg: the `train:` section.
        out_dir: the run directory (see DESIGN.md for what it holds).
        batch_size: per process.
        batch_transform: the loader's batch (on the device) -> the method's batch, run on the device
            before each step (`data.views_on: device`: the views made from uint8 pixels); on a CPU with
            workers, in the workers after collation (`devices.place_batch_transform`).
        recipe: the resolved recipe, written to config.yaml and compared on resume.
        monitor: optional `(method, epoch) -> {name: value}` run on every rank (rank 0 logs it) every
            `monitor_every_epochs`.

    Returns:
        {"step", "epoch", "out_dir", "last": last logged metrics}.

    Raises:
        RunLockedError: another live run writes into `out_dir`.
        RunInterrupted: SIGINT, SIGTERM or SIGUSR1 arrived; a checkpoint of the step it names was saved.
        CollectiveTimeoutError: some ranks did not join a collective within
            `cfg.collective_timeout_minutes` (the message names them).
        NonFiniteLossError: the loss became NaN or inf; the last good checkpoint is kept.
    """
    device = distributed.init_from_env(cfg.collective_timeout_minutes)
    out_dir = Path(out_dir)
    progress = distributed.ProgressRecords()
    with own_run_dir(out_dir), catch_stop_signals() as stop:
        try:
            return _train(method, dataset, make_optimizer, cfg, device=device, out_dir=out_dir, batch_size=batch_size,
                          num_workers=num_workers, collate_fn=collate_fn, batch_transform=batch_transform,
                          recipe=recipe, monitor=monitor,
                          monitor_every_epochs=monitor_every_epochs, stop=stop, progress=progress)
        except RuntimeError as err:
            # a collective that failed because some rank never joined it: say which rank, not only
            # that "a recv timed out"
            explained = progress.explain(err)
            if explained is None:
                raise
            raise explained from err


def _train(method: nn.Module, dataset: Dataset, make_optimizer: Callable, cfg: TrainConfig, *, device: torch.device,
           out_dir: Path, batch_size: int, num_workers: int, collate_fn: Callable | None,
           batch_transform: Callable | None, recipe: dict | None,
           monitor: Callable | None, monitor_every_epochs: int, stop: StopRequest,
           progress: distributed.ProgressRecords) -> dict[str, Any]:
    """`fit`'s loop, once the run directory is held and the stop signals are caught."""
    world = distributed.world_size()
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    if cfg.accum_steps < 1:
        raise ValueError(f"train.accum_steps must be >= 1, got {cfg.accum_steps}")
    amp_dtype = resolve_precision(cfg.precision, device)
    state = load_resume_state(out_dir, cfg.resume, recipe)

    if cfg.sync_bn and world > 1:
        if device.type != "cuda":
            raise ValueError("train.sync_bn=true needs CUDA (torch has no CPU SyncBatchNorm); set train.sync_bn=false")
        method = distributed.convert_sync_batchnorm(method)
    method.to(device)
    if cfg.channels_last:
        method.to(memory_format=torch.channels_last)
    global_batch = batch_size * world * cfg.accum_steps
    optimizer = _build_optimizer(method, make_optimizer, global_batch, cfg.lr_scaling)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    order = "global" if state is None else state.get("sample_order", "strided")
    collate_fn, batch_transform = place_batch_transform(collate_fn or collate, batch_transform, device, num_workers)
    loader, sampler = _train_loader(method, dataset, cfg, batch_size, num_workers, collate_fn, device, out_dir, order)
    micro_per_epoch = sampler.batches_per_epoch(batch_size)
    steps_per_epoch = micro_per_epoch // cfg.accum_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"the dataset has {len(dataset)} samples, fewer than one step needs "
            f"(batch_size {batch_size} x {world} processes x accum_steps {cfg.accum_steps}); lower data.batch_size"
        )
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    step, epoch, micro_done = 0, 0, 0
    if state is not None:
        load_state_strict(method, state["method"], f"checkpoint {out_dir / 'checkpoints' / 'last.pt'}")
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, epoch = state["step"], state["epoch"]
        micro_done, order = resume_position(state, out_dir / "checkpoints" / "last.pt", batch_size, cfg.accum_steps,
                                            world, fixed_micro_batch=not isinstance(sampler, ResumableSampler))
        old_accum = (state.get("layout") or {}).get("accum_steps", cfg.accum_steps)
        if old_accum != cfg.accum_steps and distributed.is_main():
            print(f"[ssl_platform] train.accum_steps {old_accum} -> {cfg.accum_steps}: each step trains on the same "
                  f"samples, {batch_size * world} per forward pass instead of {global_batch // old_accum}; a loss "
                  "over the batch (contrastive negatives) differs from the uninterrupted run's", flush=True)
        if state["world_size"] == world:
            set_rng_state(state["rng"][distributed.rank()])
        else:
            # no rank of the checkpoint is this rank: the views keep their per-sample seeds, while the
            # model's own draws (masks, dropout) continue from a seed of (seed, rank, step)
            seed_everything(cfg.seed + distributed.rank() + 1_000_003 * step)
            if distributed.is_main():
                print(f"[ssl_platform] resuming on {world} processes a run written by {state['world_size']}: "
                      "same samples and views; the model's random draws (masks, dropout) are reseeded", flush=True)
    else:
        # ranks differ from here on (e.g. random masks); rank 0 keeps the recipe's seed
        seed_everything(cfg.seed + distributed.rank())

    model: nn.Module = method
    if world > 1:
        model = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)

    if distributed.is_main():
        start_run_dir(out_dir, recipe)
        print(f"[ssl_platform] lr rule: {cfg.lr_scaling}, recipe lr x global batch {global_batch}/256 -> "
              f"peak lr {max(g['peak_lr'] for g in optimizer.param_groups):.4g}; {steps_per_epoch} steps/epoch, "
              f"{total_steps} steps in all" + (f", resuming at step {step}" if state else ""), flush=True)
    logger = RunLogger(out_dir, resume_step=step, recipe=recipe)
    start_step = saved_step = step
    last_save = _clock()

    flags = StepFlags(out_dir)
    samples = SampleLog(out_dir, distributed.broadcast_object([step, time.time_ns()]), distributed.rank(), world,
                        cfg.log_samples)

    def save() -> None:
        rng = distributed.all_gather_object(rng_state())
        if distributed.is_main():
            save_last(out_dir, {
                "method": method.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "step": step, "epoch": epoch, "micro_in_epoch": micro_done,
                "rng": rng, "world_size": world, "recipe": recipe, "method_class": type(method).__qualname__,
                "sample_order": order, "layout": {"batch_size": batch_size, "accum_steps": cfg.accum_steps},
            }, saved_step)
        distributed.barrier()

    stop_at = total_steps if cfg.max_steps is None else min(total_steps, cfg.max_steps)
    save_s = None if cfg.save_every_minutes is None else cfg.save_every_minutes * 60
    last: dict[str, float] = {}
    sums: dict[str, torch.Tensor] = {}
    seen, n_micro, t0 = 0, 0, time.perf_counter()
    bar = tqdm(total=stop_at, initial=step, disable=not distributed.is_main(), desc="train", dynamic_ncols=True)
    model.train()
    try:
        while step < stop_at:
            sampler.set_epoch(epoch)
            sampler.set_start(micro_done * batch_size)
            method.on_epoch_start(epoch)
            if sampler.batches_per_epoch(batch_size) != micro_per_epoch:
                raise RuntimeError(
                    f"epoch {epoch} has {sampler.batches_per_epoch(batch_size)} batches, not the {micro_per_epoch} "
                    "the lr schedule was built for; a method's batch sampler must keep the epoch length fixed"
                )
            epoch_iter = iter(loader)
            try:
                batches = itertools.islice(epoch_iter, steps_per_epoch * cfg.accum_steps - micro_done)
                for batch in prefetch(batches, device, cfg.channels_last, batch_transform):
                    if cfg.log_samples and isinstance(batch, dict) and "index" in batch:
                        samples.record(epoch, step, micro_done % cfg.accum_steps, batch["index"])
                    micro_done += 1
                    last_micro = micro_done % cfg.accum_steps == 0
                    progress.update(step + 1)
                    sync = contextlib.nullcontext() if last_micro or world == 1 else model.no_sync()
                    with sync:
                        with autocast(device, amp_dtype):
                            out = model(batch)
                        loss = out["loss"]
                        save_due = save_s is not None and distributed.is_main() and _clock() - last_save >= save_s
                        signum, save_due = flags.post(loss, stop.signum, save_due, step, epoch)
                        scaler.scale(loss / cfg.accum_steps).backward()
                    for k, v in out.items():
                        if isinstance(v, torch.Tensor) and v.ndim == 0:
                            sums[k] = sums[k] + v.detach().float() if k in sums else v.detach().float()
                    seen, n_micro = seen + batch_size * world, n_micro + 1
                    if not last_micro:
                        continue
                    lr, wd = _apply_schedules(optimizer, cfg, step, total_steps, warmup_steps)
                    _optimizer_step(method, optimizer, scaler, cfg.clip_grad)
                    step += 1
                    method.on_step_end(step / total_steps)
                    bar.update(1)
                    if step % cfg.log_every_steps == 0 or step == stop_at:
                        last = log_step(logger, sums, n_micro, step, epoch, lr, wd, seen, time.perf_counter() - t0)
                        bar.set_postfix(loss=f"{last.get('train/loss', float('nan')):.4f}",
                                        samples_s=f"{last['samples_per_s']:.0f}", refresh=False)
                        sums, seen, n_micro, t0 = {}, 0, 0, time.perf_counter()
                    # the flags read at the cycle's last micro-step decide, identical on every rank
                    if step % cfg.save_every_steps == 0 or step == stop_at or save_due or signum:
                        # nothing is saved before this step's own loss is known to be finite
                        settled_signum, _ = flags.settle()
                        signum = signum or settled_signum
                        if signum and step < stop_at and distributed.is_main():
                            print(f"[ssl_platform] {signal.Signals(signum).name}: saving a checkpoint at step {step}, "
                                  "then stopping", flush=True)
                        save()
                        saved_step, last_save = step, _clock()
                    if step >= stop_at:
                        break
                    if signum:
                        raise RunInterrupted(signum, step, out_dir)
            finally:
                stop_workers(epoch_iter)
            if micro_done >= steps_per_epoch * cfg.accum_steps:
                if monitor is not None and monitor_every_epochs and (epoch + 1) % monitor_every_epochs == 0:
                    run_monitor(monitor, method, epoch, step, logger)
                epoch, micro_done = epoch + 1, 0
        # completed epochs from the step alone, whether or not this call trained
        epoch = step // steps_per_epoch
        if distributed.is_main():
            export_once(method.backbone, out_dir, step, epoch, recipe, trained=step > start_step,
                        steps_per_epoch=steps_per_epoch)
        distributed.barrier()
    finally:
        bar.close()
        logger.close()
    return {"step": step, "epoch": epoch, "out_dir": str(out_dir), "last": last}


def _build_optimizer(method: nn.Module, make_optimizer: Callable, global_batch: int, rule: str) -> torch.optim.Optimizer:
    """The recipe's optimizer over the method's `param_groups()`, each group remembering its scaled peak lr
    and base wd. A group's `lr_scale` multiplies its peak lr and `wd_scale` its scheduled weight decay.
    """
    optimizer = make_optimizer(method.param_groups())
    for group in optimizer.param_groups:
        group.setdefault("wd_scale", 1.0)
        group.setdefault("lr_scale", 1.0)
        group["peak_lr"] = scale_lr(group["lr"], global_batch, rule) * group["lr_scale"]
        group["base_wd"] = group.get("weight_decay", 0.0)
    return optimizer


def _optimizer_step(method: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    clip_grad: float | None) -> None:
    if clip_grad is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        torch.nn.utils.clip_grad_norm_(method.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _apply_schedules(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int, total: int,
                     warmup: int) -> tuple[float, float]:
    lr = wd = 0.0
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = warmup_cosine(step, total, warmup, group["peak_lr"], group["peak_lr"] * cfg.min_lr)
        base_wd = group["base_wd"]
        end_wd = base_wd if cfg.weight_decay_end is None else cfg.weight_decay_end
        group["weight_decay"] = cosine(step / total, base_wd, end_wd) * group["wd_scale"]
        if i == 0:
            lr, wd = group["lr"], group["weight_decay"]
    return lr, wd
