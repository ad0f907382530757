"""Distributed helpers. Every function is a no-op (or the identity) at world size 1.

Launch only with `torchrun`; it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
The DDP wrap itself lives in `engine/trainer.py`; losses gather through lightly's autograd-aware
all_gather (`gather_distributed=True`), which this module's `gather_with_grad` also uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from lightly.utils.dist import GatherLayer

R = TypeVar("R")


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


def init_from_env(timeout_s: int = 1800) -> torch.device:
    """Join the process group torchrun describes in the environment; return this process's device.

    NCCL when CUDA is available (one GPU per local rank), gloo on CPU. Without torchrun's
    variables this does nothing and returns cuda:0 or cpu.
    """
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            timeout=timedelta(seconds=timeout_s),
            device_id=device if cuda else None,
        )
    return device


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


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
