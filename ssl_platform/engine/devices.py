"""Where a training step runs and in what number format: `train.precision` and batches on the device."""

from __future__ import annotations

from typing import Any

import torch


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision`, or None for plain fp32."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("train.precision=fp16 needs CUDA; on CPU use fp32 or bf16")
        return torch.float16
    raise ValueError(f"train.precision must be auto, fp32, bf16 or fp16; got {precision!r}")


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor in a nested batch (dicts, lists) to `device`."""
    if isinstance(batch, torch.Tensor):
        fmt = torch.channels_last if channels_last and batch.ndim == 4 and batch.is_floating_point() else None
        return batch.to(device, non_blocking=True, memory_format=fmt or torch.preserve_format)
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    if hasattr(batch, "to"):  # e.g. a torch_geometric Batch
        return batch.to(device)
    return batch
