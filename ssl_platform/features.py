"""Running a model's embedding over a dataset: `[N, D]` features and their targets, in dataset order.

The one loop behind every frozen-feature evaluation (`evaluation.features`' extractors), the online
kNN monitor (`pretrain`) and G-SimCLR's clustering. What is embedded is the embedding contract,
`embed(batch) -> [B, D]`: `models.embedding.embed_batch` for a bare backbone (the default),
`Method.embed` for a whole method.

The model runs in eval mode (BatchNorm running statistics, no dropout) under
`torch.inference_mode()`, and each submodule's train/eval flag is restored afterwards, so a training
loop can call this. Under torchrun each rank embeds every world-th sample and the features are
gathered, so every rank ends up with the same full tensors. Features are float32 on the CPU whatever
the model's dtype, so downstream math is the same for bf16 models; targets keep their type (int64
class ids, float32 regression targets or 0/1 multi-label vectors).

A progress bar (tqdm, on stderr, rank 0) counts the samples embedded when stderr is a terminal;
`progress=False` turns it off (a log file never gets one). `show_progress` is that rule, for the
evaluation's other bars too.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from ssl_platform import distributed
from ssl_platform.data.collate import TransformedDataset, collate
from ssl_platform.models.embedding import embed_batch

NOT_INPUTS = ("label", "index")  # batch keys TransformedDataset adds; they stay on the CPU


def show_progress(progress: bool = True) -> bool:
    """Whether to draw a progress bar: asked for, on rank 0, and stderr is a terminal (bars in a log
    file are noise)."""
    return progress and distributed.is_main() and sys.stderr.isatty()


@contextlib.contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and `torch.inference_mode()` for the block; every submodule's mode restored after.

    Per module, because a caller may keep parts frozen in eval mode inside a training model.
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for module, training in modes.items():
            module.training = training


def embed_dataset(
    model: nn.Module,
    dataset: Dataset,
    transform: Callable[[Any], dict] | None = None,
    *,
    embed: Callable[[dict], Tensor] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    caller: str = "embed_dataset",
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """`embed` of every sample of `dataset`, in dataset order.

    Args:
        model: the module that embeds (its modes are switched and restored), already on `device`.
        dataset: map-style, `dataset[i] -> (sample, target)`.
        transform: sample -> batch keys (a deterministic eval transform); None when samples already
            are batch keys (table rows, graphs).
        embed: batch (inputs on `device`) -> `[B, D]`; default `embed_batch(model, batch)`.
        batch_size: samples per forward pass.
        num_workers: DataLoader worker processes.
        device: where the model runs.
        caller: the name error messages and the progress bar give.
        progress: False: no bar (there is none anyway where stderr is not a terminal).

    Returns:
        feats: [N, D] float32 on the CPU.
        targets: [N] int64 class ids, or the dataset's float / vector targets, on the CPU.
    """
    if len(dataset) == 0:
        raise ValueError(f"{caller}: {type(dataset).__name__} is empty; check its split and limit")
    embed = embed or functools.partial(embed_batch, model)
    world, rank = distributed.world_size(), distributed.rank()
    mine = list(range(rank, len(dataset), world))  # this rank's share; gathered and re-ordered below
    loader = DataLoader(
        Subset(TransformedDataset(dataset, transform), mine),
        batch_size=batch_size,
        shuffle=False,  # features must line up with dataset.targets
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
    )
    feats, labels, indices = [], [], []
    bar = tqdm(total=len(mine), desc=caller, unit="sample", leave=False, dynamic_ncols=True,
               disable=not show_progress(progress))  # this rank's share: rank 0's is a world-th of the work
    with inference(model), bar:
        for batch in loader:
            inputs = {k: v if k in NOT_INPUTS else _to(v, device) for k, v in batch.items()}
            feats.append(embed(inputs).float().cpu())  # [B, D]
            labels.append(_targets(batch["label"]))
            indices.append(batch["index"])
            bar.update(len(batch["index"]))
    return _gather_in_order(torch.cat(feats), torch.cat(labels), torch.cat(indices), len(dataset))


def embed_node_split(
    model: nn.Module,
    split: Any,
    *,
    embed: Callable[[dict], Tensor] | None = None,
    device: str | torch.device = "cpu",
    caller: str = "embed_node_split",
) -> tuple[Tensor, Tensor]:
    """Node embeddings of one split of a node-level graph task.

    The model sees the whole graph (message passing needs every node) and the split selects the
    rows: the transductive protocol of GraphMAE and Planetoid. Every rank computes the same rows.

    Args:
        model: as in `embed_dataset`; `embed({"graph": Data}) -> [V, D]` node codes.
        split: `.graph` with `x [V, F]`, `edge_index [2, E]` and `y [V]`, and `.nodes [M]`, the
            indices of this split's nodes.

    Returns:
        feats: [M, D] float32 on the CPU.
        targets: [M] the split's labels.
    """
    graph, nodes = getattr(split, "graph", None), getattr(split, "nodes", None)
    if graph is None or nodes is None:
        raise TypeError(f"{caller} needs a node split with .graph (x, edge_index, y) and .nodes; "
                        f"got {type(split).__name__}")
    embed = embed or functools.partial(embed_batch, model)
    with inference(model):
        out = embed({"graph": _graph_on(graph, device)}).float().cpu()  # [V, D]
    nodes = torch.as_tensor(nodes, dtype=torch.int64)
    return out[nodes], _targets(torch.as_tensor(graph.y)[nodes])


def _graph_on(graph: Any, device: str | torch.device) -> Any:
    """The split's graph on `device`, the dataset's own left where it is: a torch_geometric `Data`
    shallow-copied (its `to` moves tensors in place), any other object with `x` and `edge_index` (a
    user's node split) as just those two."""
    if not hasattr(graph, "to"):
        return types.SimpleNamespace(x=torch.as_tensor(graph.x).to(device),
                                     edge_index=torch.as_tensor(graph.edge_index).to(device))
    return copy.copy(graph).to(device)


def _to(value: Any, device: str | torch.device) -> Any:
    """A batch value on `device`: tensors, lists of them, torch_geometric batches (`.to`)."""
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value.to(device) if hasattr(value, "to") else value


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
