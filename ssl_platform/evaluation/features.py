"""Frozen features: run a backbone once over a labelled dataset and keep `[N, D]` on the CPU.

Every protocol that works on cached features (kNN, linear probe, their label-fraction and noisy
variants) starts here, so the representation is the same everywhere: timm's pooled pre-logits
vector `forward_head(forward_features(x), pre_logits=True)`.

Extractors share one signature, `(backbone, dataset, transform, batch_size, num_workers, device)
-> (feats [N, D], targets [N, ...])`, so a suite task names the one it needs (`extractor:`):
`extract_features` for images (the default), `extract_node_features` for node-level graph tasks,
`extract_tabular_features` for tables (`x_num`, `x_cat` rows), and `pixel_summary` gives the
backbone-independent inputs of instance-dependent label noise.
Targets keep their type: int64 class ids, float regression targets, or 0/1 multi-label vectors.

Under torchrun each rank reads every world-th sample and the features are gathered, so every rank
ends up with the same full tensors (in dataset order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ssl_platform import distributed
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
    def embed(batch: dict) -> Tensor:
        if "image" not in batch:
            raise KeyError(
                f"extract_features: the transform gave keys {sorted(batch)}; "
                "use an eval transform that returns {'image': tensor} (e.g. EvalTransform)"
            )
        return _embed(backbone, batch["image"].to(device, non_blocking=True))  # [B, C, H, W] -> [B, D]

    return _extract(backbone, dataset, transform, embed, batch_size, num_workers, device, "extract_features")


def _extract(
    backbone: nn.Module,
    dataset: Dataset,
    transform: Callable[[Any], dict] | None,
    embed: Callable[[dict], Tensor],
    batch_size: int,
    num_workers: int,
    device: str | torch.device,
    caller: str,
) -> tuple[Tensor, Tensor]:
    """The loop every batched extractor shares: `embed(batch) -> [B, D]` in eval mode, this rank's share."""
    if len(dataset) == 0:
        raise ValueError(f"{caller}: {type(dataset).__name__} is empty; check its split and limit")
    world, rank = distributed.world_size(), distributed.rank()
    mine = list(range(rank, len(dataset), world))  # this rank's share; gathered and re-ordered below
    loader = DataLoader(
        torch.utils.data.Subset(TransformedDataset(dataset, transform), mine),
        batch_size=batch_size,
        shuffle=False,  # features must line up with dataset.targets
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
    )
    modes = {module: module.training for module in backbone.modules()}
    backbone.eval()
    feats, labels, indices = [], [], []
    try:
        with torch.inference_mode():
            for batch in loader:
                # float32 whatever the backbone's dtype, so downstream math is the same for bf16 models
                feats.append(embed(batch).float().cpu())  # [B, D]
                labels.append(_targets(batch["label"]))
                indices.append(batch["index"])
    finally:
        # per module, because a caller may keep parts frozen in eval mode inside a training model
        for module, training in modes.items():
            module.training = training
    return _gather_in_order(torch.cat(feats), torch.cat(labels), torch.cat(indices), len(dataset))


def _embed(backbone: nn.Module, x: Tensor) -> Tensor:
    # timm's contract when present; any other module (e.g. `PixelSummary`) is called directly
    return pooled_features(backbone, x) if hasattr(backbone, "forward_features") else backbone(x)


def _targets(label: Tensor) -> Tensor:
    """Class ids as int64; float targets (regression, multi-label) as float32."""
    return label.to(torch.int64) if not label.is_floating_point() else label.to(torch.float32)


def _gather_in_order(feats: Tensor, targets: Tensor, indices: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Every rank's share -> the full `[n, ...]` tensors in dataset order (identity at world size 1)."""
    if distributed.world_size() == 1:
        return feats, targets
    shares = distributed.all_gather_object((feats, targets, indices))
    feats = torch.cat([s[0] for s in shares])
    targets = torch.cat([s[1] for s in shares])
    order = torch.argsort(torch.cat([s[2] for s in shares]))
    if len(order) != n:
        raise RuntimeError(f"gathered {len(order)} features for {n} samples; the ranks disagree on the dataset")
    return feats[order], targets[order]


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
        backbone: `backbone(x [V, F], edge_index [2, E]) -> [V, D]` (a torch_geometric encoder).
        dataset: `.graph` with `x [V, F]`, `edge_index [2, E]` and `y [V]`, and `.nodes [M]`, the
            indices of this split's nodes.
        transform, batch_size, num_workers: unused; kept so every extractor has one signature.
        device: where the backbone runs.

    Returns:
        feats: [M, D] float32 on the CPU.
        targets: [M] the split's labels.
    """
    graph, nodes = getattr(dataset, "graph", None), getattr(dataset, "nodes", None)
    if graph is None or nodes is None:
        raise TypeError(
            f"extract_node_features needs a node split with .graph (x, edge_index, y) and .nodes; "
            f"got {type(dataset).__name__}"
        )
    modes = {module: module.training for module in backbone.modules()}
    backbone.eval()
    try:
        with torch.inference_mode():
            out = backbone(graph.x.to(device), graph.edge_index.to(device)).float().cpu()  # [V, D]
    finally:
        for module, training in modes.items():
            module.training = training
    nodes = torch.as_tensor(nodes, dtype=torch.int64)
    return out[nodes], _targets(torch.as_tensor(graph.y)[nodes])


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

    def embed(batch: dict) -> Tensor:
        if "x_num" not in batch or "x_cat" not in batch:
            raise KeyError(
                f"extract_tabular_features: batches have keys {sorted(batch)}; the dataset must give rows "
                "({'x_num': ..., 'x_cat': ...}, target), as data.datasets.Table does, with transform: null"
            )
        x_num = batch["x_num"].to(device, torch.float32, non_blocking=True)  # [B, n_num]
        x_cat = batch["x_cat"].to(device, torch.int64, non_blocking=True)  # [B, n_cat]
        return backbone.forward_head(backbone.forward_features(x_num, x_cat), pre_logits=True)  # [B, D]

    return _extract(backbone, dataset, transform, embed, batch_size, num_workers, device, "extract_tabular_features")


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

    def embed(batch: dict) -> Tensor:
        if "graph" not in batch:
            raise KeyError(f"extract_graph_features: batches have keys {sorted(batch)}; the dataset must give "
                           "({'graph': Data}, label) items, as data.datasets.Molecules does")
        graph = batch["graph"].to(device)
        return backbone.pool(backbone.forward_features(graph.x.float(), graph.edge_index), graph.batch)  # [G, D]

    return _extract(backbone, dataset, transform, embed, batch_size, num_workers, device, "extract_graph_features")
