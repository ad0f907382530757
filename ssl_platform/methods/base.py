"""The one interface between a method and the engine, and the one between a method and evaluation.

A method is an `nn.Module` that owns its backbone, heads and loss; the engine (`engine/trainer.py`)
owns the mechanics (devices, precision, accumulation, schedules, checkpoints, logging) and never
looks inside. `Method` declares every hook the engine and evaluation call, each with its default
behaviour, so a method overrides only the ones it needs and nothing is looked up by name. Batches
are dicts whose keys are each method's contract, written in its docstring.

`ImageTextMatcher` is what image-text retrieval (`evaluation/retrieval.py`) needs of a method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ssl_platform.engine import optim
from ssl_platform.models.backbones import create_backbone
from ssl_platform.models.embedding import embed_batch


class Method(nn.Module):
    """Base class: subclasses set `self.backbone` and implement `forward`; every other hook has a default.

    `backbone` follows timm's contract (`num_features`, `forward_features`, `forward_head`); the
    engine exports it as `backbone.safetensors` and evaluation reads its features through `embed`.
    """

    backbone: nn.Module

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Return a dict holding "loss" (0-d); every other 0-d tensor is logged as `train/<key>`."""
        raise NotImplementedError

    def embed(self, batch: dict) -> torch.Tensor:
        """The representation of each sample of `batch`: `[B, D]`, the one way features are read
        (evaluation, the online kNN monitor, G-SimCLR's clustering).

        Default: the backbone's embedding of the batch's model keys (`models.embedding.embed_batch`):
        `image: [B, C, H, W]` pooled; a graph `Batch` pooled per graph (one `Data` graph: its nodes);
        `x_num`/`x_cat` table rows.
        """
        return embed_batch(self.backbone, batch)

    def param_groups(self) -> list[dict]:
        """The optimizer's parameter groups; each may carry `lr_scale` (multiplies its peak lr) and
        `wd_scale` (multiplies its scheduled weight decay), e.g. layer-wise lr decay when fine-tuning.

        Default: `engine.optim.param_groups`, decayed weights and non-decayed biases, norms and the
        parameters `no_weight_decay` names.
        """
        return optim.param_groups(self)

    def no_weight_decay(self) -> set[str]:
        """Names of this module's parameters (as `named_parameters` gives them) that get no weight decay,
        e.g. mask tokens and position embeddings; timm's hook of the same name on submodules (the
        backbone's) is honoured too. Default: none beyond biases and norms."""
        return set()

    def make_batch_sampler(self, dataset: Any, *, batch_size: int, num_replicas: int, rank: int, seed: int,
                           out_dir: str | Path) -> Any | None:
        """A batch sampler when the method decides what each training batch holds (G-SimCLR), else None.

        Called once before training. The sampler yields lists of `(index, seed)` pairs (this process's
        share of a global batch) and has `set_epoch(epoch)`, `set_start(position)` and
        `batches_per_epoch(batch_size)`, which must stay fixed (the lr schedule is built on it).

        Default: None, the engine's `data.samplers.ResumableSampler` shuffle with `drop_last`.

        Args:
            dataset: the training `TransformedDataset`.
            batch_size: per process.
            num_replicas, rank: the process layout.
            seed: the recipe's `train.seed`.
            out_dir: the run directory (for files the sampler keeps, e.g. pseudo-labels).
        """
        return None

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch, resumed ones too (e.g. to re-cluster the data). Default: nothing."""

    def on_step_end(self, progress: float) -> None:
        """Called after each optimizer step with `progress` = step / total_steps in [0, 1] (e.g. an EMA
        update). Default: nothing."""


@runtime_checkable
class ImageTextMatcher(Protocol):
    """What image-text retrieval needs of a method (M3AE implements it).

    Every image and every text is encoded once; then every image-text pair is scored from the cached
    encoder tokens, so N images x N texts cost 2N encoder passes and N*N (cheap) matching passes.
    """

    def image_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """`image: [B, C, H, W]` -> `[B, Ni, D]` image encoder tokens."""

    def text_tokens(self, ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """`ids: [B, L]` int64, `text_mask: [B, L]` bool (True at real tokens) -> `[B, L, Dt]` text encoder tokens."""

    def match_logits(self, image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Encoder tokens of P pairs (`[P, Ni, D]`, `[P, L, Dt]`, `[P, L]`) -> `[P]` scores, higher = better match."""


def build_backbone(backbone: str | nn.Module, small_input: bool, in_chans: int, backbone_kwargs: dict | None) -> nn.Module:
    """A method's `backbone` argument: a timm name (built here) or a ready module (used as is).

    `backbone_kwargs` go to `create_backbone` (e.g. `stem_stride`) and on to timm (e.g. `channels`).
    """
    if isinstance(backbone, nn.Module):
        return backbone
    return create_backbone(backbone, small_input=small_input, in_chans=in_chans, **(backbone_kwargs or {}))
