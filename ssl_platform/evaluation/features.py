"""Frozen features for the evaluation suites: the extractors a task names (`extractor:`).

Every protocol that works on cached features (kNN, linear probe, their label-fraction and noisy
variants) starts here. Each extractor is a thin entry onto the one embedding loop
(`ssl_platform.features`) with a bare backbone, loaded from `backbone.safetensors`, and the one
embedding contract (`models.embedding.embed_batch`), so the representation is the same everywhere:
timm's pooled pre-logits vector `forward_head(forward_features(x), pre_logits=True)` for images.

Extractors share one signature, `(backbone, dataset, transform, batch_size, num_workers, device)
-> (feats [N, D], targets [N, ...])`, so a suite task names the one it needs (`extractor:`; this
module is the one `trust.FUNCTION_MODULES` lets suites name functions of):
`extract_features` for images (the default), `extract_node_features` for node-level graph tasks,
`extract_graph_features` for graph-level sets, `extract_tabular_features` for tables (`x_num`,
`x_cat` rows), and `pixel_summary` gives the backbone-independent inputs of instance-dependent label
noise. Targets keep their type: int64 class ids, float regression targets, or 0/1 multi-label vectors.

Under torchrun each rank reads every world-th sample and the features are gathered, so every rank
ends up with the same full tensors (in dataset order).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ssl_platform.features import embed_dataset, embed_node_split
from ssl_platform.models.embedding import embed_batch


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
    be called from inside a training loop.

    Args:
        backbone: timm contract (`forward_features`, `forward_head(x, pre_logits=True)`), already on `device`.
        dataset: map-style, `dataset[i] -> (sample, target)`; target an int class, a float or a
            vector (regression, multi-label).
        transform: sample -> `{"image": Tensor [C, H, W]}` (a deterministic eval transform).
        batch_size: images per forward pass.
        num_workers: DataLoader worker processes.
        device: where the backbone runs.

    Returns:
        feats: [N, D] float32 on the CPU.
        targets: [N] int64 class ids, or the dataset's float / vector targets, on the CPU.
    """
    return embed_dataset(backbone, dataset, transform, embed=functools.partial(embed_batch, backbone, modality="image"),
                         batch_size=batch_size, num_workers=num_workers, device=device, caller="extract_features")


class PixelSummary(nn.Module):
    """Images -> their pixels average-pooled to `side x side` and flattened: `[B, C*side*side]`.

    The fixed inputs of instance-dependent label noise: they depend on the data only, never on the
    backbone under evaluation, so every backbone is scored on the same noisy labels.
    """

    def __init__(self, side: int = 8):
        super().__init__()
        self.side = side

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x.float(), self.side).flatten(1)


def pixel_summary(
    dataset: Dataset,
    transform: Callable[[Any], dict],
    batch_size: int = 256,
    num_workers: int = 0,
    side: int = 8,
) -> Tensor:
    """`PixelSummary` of every sample of `dataset` -> `[N, C*side*side]` float32, in dataset order."""
    return extract_features(PixelSummary(side), dataset, transform, batch_size, num_workers, "cpu")[0]


def extract_node_features(
    backbone: nn.Module,
    dataset: Any,
    transform: Callable | None = None,
    batch_size: int = 0,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Node embeddings of one split of a node-level graph task.

    The backbone sees the whole graph (message passing needs every node) and the split selects the
    rows: the transductive protocol of GraphMAE and Planetoid.

    Args:
        backbone: `forward_features(x [V, F], edge_index [2, E]) -> [V, D]` (`models.graph.GAT` / `GIN`).
        dataset: `.graph` with `x [V, F]`, `edge_index [2, E]` and `y [V]`, and `.nodes [M]`, the
            indices of this split's nodes.
        transform, batch_size, num_workers: unused; kept so every extractor has one signature.
        device: where the backbone runs.

    Returns:
        feats: [M, D] float32 on the CPU.
        targets: [M] the split's labels.
    """
    return embed_node_split(backbone, dataset, device=device, caller="extract_node_features")


def extract_tabular_features(
    backbone: nn.Module,
    dataset: Dataset,
    transform: Callable[[Any], dict] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Features of every row of a table (`data.datasets.Table`), in dataset order.

    The representation is `forward_head(forward_features(x_num, x_cat), pre_logits=True)`: the tabular
    backbone's contract, whatever its head does with the tokens (T-JEPA flattens them). Eval mode and
    inference mode as in `extract_features`.

    Args:
        backbone: `forward_features(x_num [B, n_num] float, x_cat [B, n_cat] long) -> tokens [B, T, H]`
            and `forward_head(tokens, pre_logits=True) -> [B, D]`, already on `device`; `RawTabular`
            gives the inputs themselves.
        dataset: `dataset[i] -> ({"x_num": [n_num], "x_cat": [n_cat]}, target)`.
        transform: None (rows are already batch keys), or row -> `{"x_num", "x_cat"}`.
        batch_size, num_workers, device: as in `extract_features`.

    Returns:
        feats: [N, D] float32 on the CPU.
        targets: [N] int64 class ids or float32 regression targets, on the CPU.
    """
    return embed_dataset(backbone, dataset, transform, embed=functools.partial(embed_batch, backbone, modality="table"),
                         batch_size=batch_size, num_workers=num_workers, device=device,
                         caller="extract_tabular_features")


def extract_graph_features(
    backbone: nn.Module,
    dataset: Dataset,
    transform: Callable[[Any], dict] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """One embedding per graph of a graph-level set (`data.datasets.Molecules`), in dataset order.

    Args:
        backbone: `forward_features(x [N, F], edge_index [2, E]) -> [N, D]` node codes and
            `pool(h [N, D], batch [N]) -> [G, D]` (`models.graph.GAT` / `GIN`), already on `device`.
        dataset: `dataset[i] -> ({"graph": Data}, label)`.
        transform: None (items are already batch keys).
        batch_size, num_workers, device: as in `extract_features` (graphs are joined into one `Batch`).

    Returns:
        feats: [G, D] float32 on the CPU.
        targets: [G] labels.
    """
    return embed_dataset(backbone, dataset, transform, embed=functools.partial(embed_batch, backbone, modality="graph"),
                         batch_size=batch_size, num_workers=num_workers, device=device,
                         caller="extract_graph_features")
