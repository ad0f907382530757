"""Distributed helpers. Every function is a no-op (or the identity) at world size 1.

Launch only with `torchrun`; it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
The DDP wrap itself lives in `engine/trainer.py`; losses gather through lightly's autograd-aware
all_gather (`gather_distributed=True`), which this module's `gather_with_grad` also uses.

A collective that waits longer than the collective timeout fails; `ProgressRecords` then names the
ranks that never joined it (see `CollectiveTimeoutError`). That needs the failure to reach Python,
as gloo's does. NCCL's watchdog ends the process itself at the timeout by default
(TORCH_NCCL_ASYNC_ERROR_HANDLING), with its own report of the collective that timed out.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from lightly.utils.dist import GatherLayer

R = TypeVar("R")

ENV_TIMEOUT = "SSLP_COLLECTIVE_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 10.0  # torch's 30 minutes leave a hung job burning its allocation for half an hour
_timeout_s: float | None = None  # the timeout of the group this module initialised (None: not ours, or none)


class CollectiveTimeoutError(RuntimeError):
    """A collective failed because some ranks never joined it; the message names them and what to check.

    Attributes:
        missing: the ranks that did not answer.
    """

    def __init__(self, message: str, missing: list[int]):
        super().__init__(message)
        self.missing = missing


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def collective_timeout_minutes(timeout_minutes: float | None = None) -> float:
    """`timeout_minutes`, else `$SSLP_COLLECTIVE_TIMEOUT_MINUTES`, else 10.

    Raises:
        ValueError: the environment variable is not a positive number.
    """
    if timeout_minutes is None:
        raw = os.environ.get(ENV_TIMEOUT)
        if raw is None:
            return DEFAULT_TIMEOUT_MINUTES
        try:
            timeout_minutes = float(raw)
        except ValueError:
            timeout_minutes = math.nan
        if not timeout_minutes > 0 or math.isinf(timeout_minutes):
            raise ValueError(f"{ENV_TIMEOUT}={raw!r} is not a positive number of minutes; set it to e.g. 10, "
                             "or unset it for the default of 10")
    if not timeout_minutes > 0:
        raise ValueError(f"the collective timeout must be a positive number of minutes, got {timeout_minutes}")
    return float(timeout_minutes)


def init_from_env(timeout_minutes: float | None = None) -> torch.device:
    """Join the process group torchrun describes in the environment; return this process's device.

    NCCL when CUDA is available (one GPU per local rank), gloo on CPU. Without torchrun's
    variables this does nothing and returns cuda:0 or cpu. A group that already exists is kept as
    it is (its timeout too).

    Args:
        timeout_minutes: how long a collective waits for the slowest rank before failing; None:
            `$SSLP_COLLECTIVE_TIMEOUT_MINUTES`, else 10 (see `collective_timeout_minutes`).
    """
    global _timeout_s
    minutes = collective_timeout_minutes(timeout_minutes)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            timeout=timedelta(minutes=minutes),
            device_id=device if cuda else None,
        )
        _timeout_s = minutes * 60
    return device


def destroy() -> None:
    global _timeout_s
    if is_initialized():
        dist.destroy_process_group()
    _timeout_s = None


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x: [n, ...]` from every rank along dim 0 -> `[n * world, ...]`, keeping gradients.

    The backward sums incoming gradients over ranks and returns this rank's slice (lightly's
    GatherLayer), so the result equals a single process on the concatenated batch.
    """
    if world_size() == 1:
        return x
    return torch.cat(GatherLayer.apply(x), dim=0)


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x: [n, ...]` (same n on every rank) without gradients -> `[n * world, ...]`."""
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over ranks (a new tensor; `x` is untouched)."""
    if world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / world_size()


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.MAX)
    return y


def broadcast_object(obj: R) -> R:
    """Rank 0's `obj` on every rank (e.g. a decision only the main process can make)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: R) -> list[R]:
    """Every rank's picklable `obj`, in rank order (e.g. per-rank RNG states for a checkpoint)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def rank_zero_only(fn: Callable[..., R]) -> Callable[..., R | None]:
    """Decorator: run `fn` on rank 0 only (file and TensorBoard I/O); other ranks get None."""

    def wrapped(*args, **kwargs):
        return fn(*args, **kwargs) if is_main() else None

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def convert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """torch's `SyncBatchNorm.convert_sync_batchnorm`, except that a norm with its own
    `as_sync_batchnorm()` converts itself: torch's version would replace a BatchNorm subclass (SparK's
    visible-only `SparseBatchNorm2d`) by a plain SyncBatchNorm and silently change what it computes."""
    if callable(getattr(module, "as_sync_batchnorm", None)):
        return module.as_sync_batchnorm()
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child))
    return module


def is_collective_failure(err: BaseException) -> bool:
    """Whether `err` came from a collective (a timeout, a peer that went away), not from the model."""
    # NCCL and the store raise torch's DistError family; gloo raises plain RuntimeErrors whose text
    # names its transport's source file (".../gloo/transport/tcp/unbound_buffer.cc:78] Timed out ...")
    return isinstance(err, dist.DistError) or (isinstance(err, RuntimeError) and "gloo/" in str(err))


def _store() -> dist.Store:
    # the process group's own key-value store (torchrun's rendezvous store, or rank 0's TCPStore):
    # every rank already reaches it, and its server is a C++ thread that keeps answering while a
    # rank's Python hangs; torch has no public accessor for it
    return dist.distributed_c10d._get_default_store()


class ProgressRecords:
    """Each rank's current step, kept in the process group's store, so that a failed collective can
    name the ranks it waited for.

    Every rank calls `update(step)` as it works: a store write at most every `interval_s` (one round
    trip to the store's host, never a device sync). When a collective fails, each rank that waited
    in it calls `explain`: it records "waiting at step s", gives the others `grace_s` to do the
    same, and names those that did not: they never reached the collective (hung or dead).
    Everything is a no-op at world size 1.

    Args:
        interval_s: least seconds between two writes of this rank's record; None: a quarter of the
            collective timeout, at most 5 s.
        grace_s: how long `explain` waits for the other ranks' answers; None: the collective
            timeout, at most 30 s (ranks enter a collective up to one micro-step apart, so they time
            out up to that much apart too).
    """

    _instances = itertools.count()  # every rank builds the same sequence of these: the keys agree

    def __init__(self, interval_s: float | None = None, grace_s: float | None = None):
        self.enabled = world_size() > 1
        timeout = _timeout_s or DEFAULT_TIMEOUT_MINUTES * 60
        self.interval_s = min(5.0, timeout / 4) if interval_s is None else interval_s
        self.grace_s = min(30.0, timeout) if grace_s is None else grace_s
        self.step = 0
        self._written = -math.inf
        self._prefix = f"sslp/progress/{next(self._instances)}"

    def _record(self) -> str:
        return json.dumps({"step": self.step, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})

    def update(self, step: int) -> None:
        """This rank is working on `step`; the store hears of it at most every `interval_s`."""
        self.step = step
        now = time.monotonic()
        if not self.enabled or now - self._written < self.interval_s:
            return
        self._written = now
        _store().set(f"{self._prefix}/at/{rank()}", self._record())

    def _read(self, store: dist.Store, kind: str, wait_s: float) -> dict[int, dict]:
        """The `kind` records present (waiting up to `wait_s` for every rank's), by rank."""
        found: dict[int, dict] = {}
        deadline = time.monotonic() + wait_s
        while True:
            for r in range(world_size()):
                key = f"{self._prefix}/{kind}/{r}"
                if r not in found and store.check([key]):
                    found[r] = json.loads(store.get(key))
            if len(found) == world_size() or time.monotonic() >= deadline:
                return found
            time.sleep(0.1)

    def explain(self, err: BaseException) -> CollectiveTimeoutError | None:
        """After a failed collective: an error naming the ranks that never joined it, or None when
        `err` is no collective failure, every rank answered, or the store cannot be reached either
        (then `err` itself is the best account)."""
        if not self.enabled or not is_collective_failure(err):
            return None
        try:
            store = _store()
            store.set(f"{self._prefix}/waiting/{rank()}", self._record())
            waiting = self._read(store, "waiting", self.grace_s)
            missing = [r for r in range(world_size()) if r not in waiting]
            if not missing:
                return None
            seen = self._read(store, "at", 0.0)
        except RuntimeError:  # DistStoreError and kin: the store's host went away with the rank
            return None
        now = time.time()
        who = []
        for r in missing:
            rec = seen.get(r)
            who.append(f"rank {r} (host {rec['host']}, pid {rec['pid']}: last reported step {rec['step']}, "
                       f"{now - rec['time']:.0f} s ago)" if rec else f"rank {r} (which never reported its progress)")
        timeout = f"{_timeout_s / 60:.3g} min" if _timeout_s else "the collective timeout"
        # gloo's words for a peer whose process ended, rather than one that hangs
        ended = any(w in str(err).lower() for w in ("connection closed", "connection reset"))
        verb = "went away (its process ended: its own error is in its log)" if ended else f"did not answer within {timeout}"
        steps = sorted({rec["step"] for rec in waiting.values()})
        waited = (f"rank{'s' if len(waiting) > 1 else ''} {', '.join(map(str, sorted(waiting)))} "
                  f"waited at step {', '.join(map(str, steps))}")
        return CollectiveTimeoutError(
            f"{' and '.join(who)} {verb}, while {waited}. Check that process (a hung data loader or file "
            "system, a dead node, a deadlock in a method's code); if one step can legitimately take longer, "
            f"raise train.collective_timeout_minutes (or {ENV_TIMEOUT}). Running the same command again resumes "
            "from the last checkpoint.",
            missing,
        )
