"""Node-level graphs: one graph, pretrained on whole, evaluated on splits of its nodes.

`NodeGraph` wraps any torch_geometric `Data` with node labels `y`. For pretraining each item is the
whole graph (`({"graph": data}, -1)`; message passing needs every node), repeated `repeats` times
per epoch so that an epoch holds several optimizer steps and every process of a DDP run gets the
graph. For evaluation it is one split of the nodes: `.graph` and `.nodes` are what
`evaluation.features.extract_node_features` reads (the transductive protocol of GraphMAE/Planetoid).

`KarateClub` (Zachary's club, 34 nodes, 4 communities) ships inside torch_geometric: no download.
"""

from __future__ import annotations

import numpy as np
import torch

from ssl_platform.data.datasets.base import check_split

SPLITS = ("all", "train", "test")


class NodeGraph:
    """A node-level graph as a pretraining set (`repeats` items, each the whole graph) and as a node split.

    Args:
        graph: torch_geometric `Data` with `x: [N, F]`, `edge_index: [2, E]` and `y: [N]` node labels.
        split: "all" (every node), "train" or "test" (a stratified split of the nodes by `seed`).
        test_fraction: share of each class's nodes in the test split.
        seed: seed of the split.
        repeats: items per epoch (each is the whole graph).
        classes: class names (default: the label values as strings).
    """

    def __init__(self, graph, split: str = "all", test_fraction: float = 0.5, seed: int = 0, repeats: int = 1,
                 classes: list[str] | None = None):
        self.split = check_split(split, SPLITS, type(self).__name__)
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        self.graph, self.repeats = graph, repeats
        y = np.asarray(graph.y)
        rng = np.random.default_rng(seed)
        test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: round(test_fraction * (y == c).sum())]
                               for c in np.unique(y)])
        chosen = {"all": np.arange(len(y)), "test": np.sort(test), "train": np.setdiff1d(np.arange(len(y)), test)}[split]
        self.nodes = torch.as_tensor(chosen, dtype=torch.int64)
        self.targets = y[chosen].astype(np.int64)
        self.classes = classes or [str(c) for c in np.unique(y)]

    def __len__(self) -> int:
        return self.repeats

    def __getitem__(self, index: int) -> tuple[dict, int]:
        if not 0 <= index < self.repeats:
            raise IndexError(index)
        return {"graph": self.graph}, -1

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(nodes={self.graph.num_nodes}, edges={self.graph.num_edges}, "
                f"split={self.split}: {len(self.nodes)} nodes, repeats={self.repeats})")


class KarateClub(NodeGraph):
    """Zachary's karate club from torch_geometric (34 nodes, 156 directed edges, one-hot node ids as
    features, 4 community labels)."""

    def __init__(self, split: str = "all", test_fraction: float = 0.5, seed: int = 0, repeats: int = 1):
        from torch_geometric.datasets import KarateClub as PygKarateClub

        super().__init__(PygKarateClub()[0], split, test_fraction, seed, repeats)
