"""Node-level graphs: one graph, pretrained on whole, evaluated on splits of its nodes.

`NodeGraph` wraps any torch_geometric `Data` with node labels `y`. For pretraining each item is the
whole graph (`({"graph": data}, -1)`; message passing needs every node), repeated `repeats` times
per epoch so that an epoch holds several optimizer steps and every process of a DDP run gets the
graph. For evaluation it is one split of the nodes: `.graph` and `.nodes` are what
`evaluation.features.extract_node_features` reads (the transductive protocol of GraphMAE/Planetoid).

`KarateClub` (Zachary's club, 34 nodes, 4 communities) ships inside torch_geometric: no download.
`ImageKNNGraph` turns an image set (Fashion-MNIST, MNIST) into a node-level task with real features
and labels: one node per image, its pixels as features, edges to its k nearest images (faiss).
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

    @property
    def num_node_features(self) -> int:
        return int(self.graph.num_node_features)

    def __len__(self) -> int:
        return self.repeats

    def __getitem__(self, index: int) -> tuple[dict, int]:
        if not 0 <= index < self.repeats:
            raise IndexError(index)
        return {"graph": self.graph}, -1

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(nodes={self.graph.num_nodes}, edges={self.graph.num_edges}, "
                f"split={self.split}: {len(self.nodes)} nodes, repeats={self.repeats})")


def knn_edges(features: np.ndarray, k: int) -> torch.Tensor:
    """`[N, F]` -> `edge_index [2, E]`: each node linked to its `k` nearest other nodes (Euclidean,
    exact faiss search), both directions, no self loops, no duplicates."""
    import faiss

    x = np.ascontiguousarray(features, dtype=np.float32)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, neighbours = index.search(x, k + 1)  # the nearest is (almost always) the node itself
    src = np.repeat(np.arange(len(x)), k + 1)
    dst = neighbours.reshape(-1)
    keep = (dst != src) & (dst >= 0)
    pairs = np.unique(np.concatenate([np.stack([src[keep], dst[keep]]), np.stack([dst[keep], src[keep]])], 1), axis=1)
    return torch.as_tensor(pairs, dtype=torch.int64)


class ImageKNNGraph(NodeGraph):
    """A k-nearest-neighbour graph over the images of a labelled image set (GraphMAE's CPU node task).

    Nodes are a class-balanced `num_nodes` of the set's images (its `limit`), node features their
    pixels scaled to [0, 1] (`[N, C*H*W]`), edges each image's `k` nearest images in pixel space, labels
    the image classes. Splits are stratified splits of the nodes (transductive, as Planetoid).

    Args:
        dataset: an image set with `images` (`[N, H, W]` uint8) and `targets` (`FashionMNIST`, `MNIST`).
        k: neighbours per node.
        split, test_fraction, seed, repeats: as in `NodeGraph`.
    """

    def __init__(self, dataset, k: int = 10, split: str = "all", test_fraction: float = 0.5, seed: int = 0,
                 repeats: int = 1):
        from torch_geometric.data import Data

        images = np.asarray(dataset.images)
        features = images.reshape(len(images), -1).astype(np.float32) / 255.0
        graph = Data(x=torch.from_numpy(features), edge_index=knn_edges(features, k),
                     y=torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64))
        super().__init__(graph, split, test_fraction, seed, repeats, classes=list(dataset.classes))


class FashionMNISTKNNGraph(ImageKNNGraph):
    """`ImageKNNGraph` over a class-balanced `num_nodes` of the Fashion-MNIST training images (prepare
    once: `python -m ssl_platform data prepare fashion-mnist`)."""

    def __init__(self, num_nodes: int = 10000, k: int = 10, split: str = "all", test_fraction: float = 0.5,
                 seed: int = 0, repeats: int = 1, root: str | None = None):
        from ssl_platform.data.datasets.idx import FashionMNIST

        super().__init__(FashionMNIST(split="train", root=root, limit=num_nodes, seed=0), k, split, test_fraction,
                         seed, repeats)


class KarateClub(NodeGraph):
    """Zachary's karate club from torch_geometric (34 nodes, 156 directed edges, one-hot node ids as
    features, 4 community labels)."""

    def __init__(self, split: str = "all", test_fraction: float = 0.5, seed: int = 0, repeats: int = 1):
        from torch_geometric.datasets import KarateClub as PygKarateClub

        super().__init__(PygKarateClub()[0], split, test_fraction, seed, repeats)
