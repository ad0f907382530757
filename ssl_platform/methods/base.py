"""The one interface between a method and the engine.

A method is an `nn.Module` that owns its backbone, heads and loss; the engine (`engine/trainer.py`)
owns the mechanics (devices, precision, accumulation, schedules, checkpoints, logging) and never
looks inside. Batches are dicts whose keys are each method's contract, written in its docstring.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_platform.models.backbones import create_backbone, pooled_features


class Method(nn.Module):
    """Base class: subclasses set `self.backbone` and implement `forward`.

    `backbone` follows timm's contract (`num_features`, `forward_features`, `forward_head`), so
    `embed` works for every method and evaluation never special-cases one.

    Optional hooks the engine looks for (`engine/trainer.py`):
      - `param_groups() -> list[dict]`: the optimizer's groups, each may carry `lr_scale` and
        `wd_scale` (layer-wise lr decay when fine-tuning); default: decay / no-decay split.
      - `make_batch_sampler(dataset, *, batch_size, num_replicas, rank, seed, out_dir)`: a batch
        sampler of `(index, seed)` lists with `set_epoch`, `set_start` and `batches_per_epoch`, when
        the method decides what a batch holds (G-SimCLR); default: `ResumableSampler`'s shuffle.
    """

    backbone: nn.Module

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Return a dict holding "loss" (0-d); every other 0-d tensor is logged as `train/<key>`."""
        raise NotImplementedError

    def on_step_end(self, progress: float) -> None:
        """Called after each optimizer step with `progress` = step / total_steps in [0, 1]."""

    def on_epoch_start(self, epoch: int, loader) -> None:
        """Called before each epoch (e.g. to re-cluster the data)."""

    def embed(self, batch: dict) -> torch.Tensor:
        """`batch["image"]: [B, C, H, W]` -> representation `[B, num_features]`."""
        return pooled_features(self.backbone, batch["image"])


def build_backbone(backbone: str | nn.Module, small_input: bool, in_chans: int, backbone_kwargs: dict | None) -> nn.Module:
    """A method's `backbone` argument: a timm name (built here) or a ready module (used as is).

    `backbone_kwargs` go to `create_backbone` (e.g. `stem_stride`) and on to timm (e.g. `channels`).
    """
    if isinstance(backbone, nn.Module):
        return backbone
    return create_backbone(backbone, small_input=small_input, in_chans=in_chans, **(backbone_kwargs or {}))
