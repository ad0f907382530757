"""Node masks for GraphMAE: which nodes lose their features, and which of those get another node's.

Hou et al., "GraphMAE: Self-Supervised Masked Graph Autoencoders", KDD 2022 (THUDM/GraphMAE).

Pure functions: randomness comes from the `generator` argument (None: torch's global RNG, which the
engine checkpoints, so a resumed run draws the same masks).

A fresh random node set V~ of `int(mask_rate * N)` nodes is drawn per step. Of those, a fraction
`replace_rate` get the features of uniformly random nodes instead of the mask token (BERT's trick,
so the encoder cannot tell masked nodes by their input alone); every node of V~ stays in the loss
with its original target.

Drop-edge (`drop_edges`, GraphMAE's `drop_edge_rate`, e.g. 0.5 on ogbn-arxiv) thins the encoder's
graph once per step: each edge survives independently with probability `1 - drop_rate`.
"""

from __future__ import annotations

import torch


def mask_nodes(
    num_nodes: int, mask_rate: float, replace_rate: float = 0.0, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw GraphMAE's node mask.

    Returns:
        masked: `[M]` int64 node ids of V~, `M = int(mask_rate * num_nodes)`.
        replaced: `[R]` int64 the subset of `masked` whose input becomes another node's features,
            `R = int(replace_rate * M)`.
        sources: `[R]` int64 the nodes whose features they get (uniform over all nodes).
    """
    if not 0.0 < mask_rate < 1.0:
        raise ValueError(f"mask_rate must be in (0, 1), got {mask_rate}")
    if not 0.0 <= replace_rate < 1.0:
        raise ValueError(f"replace_rate must be in [0, 1), got {replace_rate}")
    num_masked = int(mask_rate * num_nodes)
    if num_masked == 0:
        raise ValueError(f"mask_rate {mask_rate} masks no node of a graph of {num_nodes}; raise it or use larger graphs")
    masked = torch.randperm(num_nodes, generator=generator)[:num_masked]
    num_replaced = int(replace_rate * num_masked)
    replaced = masked[torch.randperm(num_masked, generator=generator)[:num_replaced]]
    sources = torch.randint(0, num_nodes, (num_replaced,), generator=generator)
    return masked, replaced, sources


def corrupt_features(
    x: torch.Tensor, masked: torch.Tensor, replaced: torch.Tensor, sources: torch.Tensor, mask_token: torch.Tensor
) -> torch.Tensor:
    """`x: [N, F]` -> the encoder's input `[N, F]`: masked nodes carry `mask_token` (`[F]` or `[1, F]`,
    learnable), the replaced ones `x[sources]`, every other node its own features."""
    out = x.clone()
    token_nodes = masked[~torch.isin(masked, replaced)]
    out[token_nodes] = mask_token.reshape(1, -1).to(x.dtype).expand(len(token_nodes), -1)
    out[replaced] = x[sources]
    return out


def remask(h: torch.Tensor, masked: torch.Tensor, token: torch.Tensor | None = None) -> torch.Tensor:
    """Re-masking before a GNN decoder: the codes of the nodes `masked` replaced by [DMASK], so the
    decoder must rebuild them from their neighbours. GraphMAE: [DMASK] = 0 on the input-masked nodes;
    GraphMAE2: a learnable `token` (`[D]` or `[1, D]`) on random nodes. `h: [N, D]` -> `[N, D]` (a copy)."""
    out = h.clone()
    out[masked] = 0.0 if token is None else token.reshape(1, -1).to(h.dtype).expand(len(masked), -1)
    return out


def drop_edges(edge_index: torch.Tensor, drop_rate: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """GraphMAE's drop-edge: `edge_index: [2, E]` -> the surviving edges `[2, E']`, in their order.

    One uniform draw u_e in [0, 1) per edge, in edge order (`torch.rand(E, generator=generator)`, on
    the CPU); an edge survives when u_e >= `drop_rate`, so with probability 1 - `drop_rate`, as the
    official Bernoulli(1 - p) mask (THUDM/GraphMAE `graphmae/utils.py: mask_edge, drop_edge`). The
    two directions of an undirected edge are separate edges there and here.

    Self-loops are never dropped. Officially every node has its self-loop after the drop as before
    it: the data carry one per node, and `drop_edge` re-adds one per node after the draw (GraphMAE2
    removes them before drawing, GraphMAE draws them too and then adds one more, so a node whose
    own loop survived has two). Our graphs carry none and `GATConv` adds exactly one per node, which
    is GraphMAE2's result; keeping whatever self-loops a graph has leaves GIN's input as it was.

    `drop_rate` 0 returns `edge_index` itself and draws nothing (the official code skips it too).
    """
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    if drop_rate == 0.0:
        return edge_index
    draws = torch.rand(edge_index.shape[1], generator=generator).to(edge_index.device)
    keep = (draws >= drop_rate) | (edge_index[0] == edge_index[1])
    return edge_index[:, keep]
