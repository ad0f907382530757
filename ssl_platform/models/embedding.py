"""The embedding contract: one representation per sample of a batch, from a bare backbone.

Every consumer of features reads them this way: `Method.embed`'s default, the evaluation
extractors (which load bare backbones from `backbone.safetensors`), the online kNN monitor and
G-SimCLR's clustering. The batch's keys say what the samples are:

- `image: [B, C, H, W]` -> timm's pooled pre-logits vector `forward_head(forward_features(x),
  pre_logits=True)`, `[B, D]`; a module without `forward_features` (e.g. the fixed pixel summary of
  label-noise studies) is called as it is;
- `graph`: a torch_geometric `Batch` of G graphs -> `pool(forward_features(x, edge_index), batch)`,
  `[G, D]`; a single `Data` graph (a node-level task, whose samples are its nodes) -> node codes `[V, D]`;
- `x_num: [B, n_num]` float and `x_cat: [B, n_cat]` int64 (a table row; `x_cat` may be absent) ->
  `forward_head(forward_features(x_num, x_cat), pre_logits=True)`, `[B, D]`.

The inputs must already be on the backbone's device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ssl_platform.models.backbones import pooled_features

# the keys each kind of sample needs, in the order a batch's kind is inferred
MODALITIES = {"image": ("image",), "graph": ("graph",), "table": ("x_num",)}
_REMEDY = {
    "image": "use an eval transform that returns {'image': tensor} (e.g. EvalTransform)",
    "graph": "the dataset must give ({'graph': Data}, label) items, as data.datasets.Molecules does",
    "table": "the dataset must give rows ({'x_num': ..., 'x_cat': ...}, target), as data.datasets.Table does, "
             "with transform: null",
}


def batch_modality(batch: dict) -> str:
    """`"image"`, `"graph"` or `"table"`: the first kind whose keys the batch holds.

    Raises:
        KeyError: the batch holds none of them; names its keys.
    """
    for modality, keys in MODALITIES.items():
        if all(k in batch for k in keys):
            return modality
    raise KeyError(f"nothing to embed: batches have keys {sorted(batch)}, and an embedding reads 'image', "
                   "'graph' or 'x_num' (with 'x_cat'); check the dataset and its transform")


def embed_batch(backbone: nn.Module, batch: dict, modality: str | None = None) -> torch.Tensor:
    """`backbone`'s representation of every sample of `batch` -> `[B, D]` (see the module docstring).

    Args:
        backbone: timm's contract (`forward_features`, `forward_head(x, pre_logits=True)`; graph
            encoders also `pool(h, batch)`), on the batch's device.
        batch: a batch dict; only its model inputs are read.
        modality: "image", "graph" or "table"; None infers it from the keys (`batch_modality`).

    Raises:
        KeyError: the batch lacks the keys of `modality`; says what the data must give.
    """
    modality = batch_modality(batch) if modality is None else modality
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {sorted(MODALITIES)} or None, got {modality!r}")
    missing = [k for k in MODALITIES[modality] if k not in batch]
    if missing:
        raise KeyError(f"a {modality} embedding needs {missing}; batches have keys {sorted(batch)}: "
                       f"{_REMEDY[modality]}")
    if modality == "image":
        return image_embedding(backbone, batch["image"])
    if modality == "graph":
        return graph_embedding(backbone, batch["graph"])
    return table_embedding(backbone, batch["x_num"], batch.get("x_cat"))


def image_embedding(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`x: [B, C, H, W]` -> `[B, D]`: timm's contract when present, else the module's own output."""
    return pooled_features(backbone, x) if hasattr(backbone, "forward_features") else backbone(x)


def graph_embedding(backbone: nn.Module, graph: Any) -> torch.Tensor:
    """A `Batch` of G graphs -> pooled `[G, D]`; one `Data` graph (no `batch` vector) -> node codes `[V, D]`.

    Like images, a module without timm's `forward_features` (a user's GNN) is called as it is."""
    encode = backbone.forward_features if hasattr(backbone, "forward_features") else backbone
    h = encode(graph.x.float(), graph.edge_index)  # [V, D]
    batch = getattr(graph, "batch", None)
    return h if batch is None else backbone.pool(h, batch)


def table_embedding(backbone: nn.Module, x_num: torch.Tensor, x_cat: torch.Tensor | None) -> torch.Tensor:
    """`x_num: [B, n_num]`, `x_cat: [B, n_cat]` or None -> `[B, D]` (T-JEPA's encoder flattens its tokens)."""
    x_cat = None if x_cat is None else x_cat.to(torch.int64)
    return backbone.forward_head(backbone.forward_features(x_num.to(torch.float32), x_cat), pre_logits=True)
