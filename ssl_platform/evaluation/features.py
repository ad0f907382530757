"""Frozen features: run a backbone once over a labelled dataset and keep `[N, D]` on the CPU.

Every protocol that works on cached features (kNN, linear probe, their label-fraction and noisy
variants) starts here, so the representation is the same everywhere: timm's pooled pre-logits
vector `forward_head(forward_features(x), pre_logits=True)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ssl_platform.data.collate import TransformedDataset, collate
from ssl_platform.models.backbones import pooled_features


def extract_features(
    backbone: nn.Module,
    dataset: Dataset,
    transform: Callable[[Any], dict],
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Pooled features and labels of every sample of `dataset`, in dataset order.

    The backbone runs in eval mode (BatchNorm running statistics, no dropout) under
    `torch.inference_mode()`; each submodule's train/eval flag is restored afterwards, so this can
    be called from inside a training loop (the online kNN monitor does).

    Args:
        backbone: timm contract (`forward_features`, `forward_head(x, pre_logits=True)`), already on `device`.
        dataset: map-style, `dataset[i] -> (sample, int label)`.
        transform: sample -> `{"image": Tensor [C, H, W]}` (a deterministic eval transform).
        batch_size: images per forward pass.
        num_workers: DataLoader worker processes.
        device: where the backbone runs.

    Returns:
        feats: [N, D] float32 on the CPU.
        labels: [N] int64 on the CPU.
    """
    if len(dataset) == 0:
        raise ValueError(f"extract_features: {type(dataset).__name__} is empty; check its split and limit")
    loader = DataLoader(
        TransformedDataset(dataset, transform),
        batch_size=batch_size,
        shuffle=False,  # features must line up with dataset.targets
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
    )
    modes = {module: module.training for module in backbone.modules()}
    backbone.eval()
    feats, labels = [], []
    try:
        with torch.inference_mode():
            for batch in loader:
                if "image" not in batch:
                    raise KeyError(
                        f"extract_features: the transform gave keys {sorted(batch)}; "
                        "use an eval transform that returns {'image': tensor} (e.g. EvalTransform)"
                    )
                x = batch["image"].to(device, non_blocking=True)  # [B, C, H, W]
                # float32 whatever the backbone's dtype, so downstream math is the same for bf16 models
                feats.append(pooled_features(backbone, x).float().cpu())  # [B, D]
                labels.append(batch["label"].to(torch.int64))
    finally:
        # per module, because a caller may keep parts frozen in eval mode inside a training model
        for module, training in modes.items():
            module.training = training
    return torch.cat(feats), torch.cat(labels)
