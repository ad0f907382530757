"""Node-level graphs: one graph, pretrained on whole, evaluated on splits of its nodes.

`NodeGraph` wraps any torch_geometric `Data` with node labels `y`. For pretraining each item is the
whole graph (`({"graph": data}, -1)`; message passing needs every node), repeated `repeats` times
per epoch so that an epoch holds several optimizer steps and every process of a DDP run gets the
graph. For evaluation it is one split of the nodes: `.graph` and `.nodes` are what
`evaluation.features.extract_node_features` reads (the transductive protocol of GraphMAE/Planetoid).

`KarateClub` (Zachary's club, 34 nodes, 4 communities) ships inside torch_geometric: no download.
`ImageKNNGraph` turns an image set (Fashion-MNIST, MNIST) into a node-level task with real features
and labels: one node per image, its pixels as features, edges to its k nearest images (faiss).

With internet (once; torch_geometric / ogb cache the files under `root`):
`Planetoid` (Cora, CiteSeer, PubMed with their public split), `OGBNodeGraph` (ogbn-arxiv and the
other ogbn node sets, with OGB's split; needs `pip install ogb`), and at graph level `TUGraphs`
(TUDataset: MUTAG, PROTEINS, IMDB-BINARY, ...; items `({"graph": Data}, class)` like `Molecules`).
Each can also read files copied by hand into its raw folder (the error says where). Before
torch_geometric reads a data root, its processed files and Planetoid's raw pickles are checked
(`graph_files.py`): a file that would need arbitrary code to unpickle is refused, not loaded.
"""

from __future__ import annotations

import numpy as np
import torch

from ssl_platform.data.datasets.base import check_split, stratified_holdout
from ssl_platform.data.datasets.graph_files import check_processed, check_raw_pickles
from ssl_platform.data.datasets.idx import FashionMNIST
from ssl_platform.data.root import resolve_root

SPLITS = ("all", "train", "test")


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """`[N]` labels -> {"all", "train", "test"}: sorted indices, `test_fraction` of each class in test
    (`base.stratified_holdout`: every class keeps a training sample)."""
    train, test = stratified_holdout(y, test_fraction, seed)
    return {"all": np.arange(len(y)), "test": test, "train": train}


class NodeGraph:
    """A node-level graph as a pretraining set (`repeats` items, each the whole graph) and as a node split.

    Args:
        graph: torch_geometric `Data` with `x: [N, F]`, `edge_index: [2, E]` and `y: [N]` node labels.
        split: "all" (every node), "train" or "test" (a stratified split of the nodes by `seed`).
        test_fraction: share of each class's nodes in the test split.
        seed: seed of the split.
        repeats: items per epoch (each is the whole graph).
        classes: class names (default: the label values as strings).
        splits: fixed node splits (name -> node indices), e.g. a benchmark's public split; then `split`
            is "all" or one of these names, and `test_fraction` / `seed` are not used.
    """

    def __init__(self, graph, split: str = "all", test_fraction: float = 0.5, seed: int = 0, repeats: int = 1,
                 classes: list[str] | None = None, splits: dict | None = None):
        self.split = check_split(split, ("all", *splits) if splits else SPLITS, type(self).__name__)
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        self.graph, self.repeats = graph, repeats
        y = np.asarray(graph.y)
        if splits:
            chosen = np.arange(len(y)) if split == "all" else np.sort(np.asarray(splits[split], np.int64))
        else:
            chosen = stratified_split(y, test_fraction, seed)[split]
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
        super().__init__(FashionMNIST(split="train", root=root, limit=num_nodes, seed=0), k, split, test_fraction,
                         seed, repeats)


class KarateClub(NodeGraph):
    """Zachary's karate club from torch_geometric (34 nodes, 156 directed edges, one-hot node ids as
    features, 4 community labels)."""

    def __init__(self, split: str = "all", test_fraction: float = 0.5, seed: int = 0, repeats: int = 1):
        from torch_geometric.datasets import KarateClub as PygKarateClub

        super().__init__(PygKarateClub()[0], split, test_fraction, seed, repeats)


def _internet_set(build, title: str, raw_dir: str, remedy: str):
    """Run a torch_geometric / ogb constructor that downloads on first use; a failed download says
    where the files go instead of showing a urllib traceback."""
    try:
        return build()
    except (OSError, RuntimeError) as err:  # URLError is an OSError; fsspec raises both
        raise RuntimeError(f"{title}: could not read or download it ({type(err).__name__}: {err}). It needs "
                           f"internet once; or put the raw files into {raw_dir}/ ({remedy})") from err


class Planetoid(NodeGraph):
    """Cora, CiteSeer or PubMed (torch_geometric's `Planetoid`) with the public split: 20 labelled nodes
    per class for training, 500 for validation, 1000 for testing (GraphMAE's node benchmark).

    Features are row-normalised (sum 1 per node), as GraphMAE's loaders give them.

    Args:
        name: "Cora", "CiteSeer" or "PubMed".
        split: "all" (pretraining), "train", "val" or "test" (the public masks).
        root: data root (default: `SSL_PLATFORM_DATA` or ./data); files go to `<root>/planetoid/<name>/`.
        repeats: as in `NodeGraph`.
    """

    NAMES = ("Cora", "CiteSeer", "PubMed")

    def __init__(self, name: str = "Cora", split: str = "all", root: str | None = None, repeats: int = 1):
        import torch_geometric.transforms as T
        from torch_geometric.datasets import Planetoid as PygPlanetoid

        if name not in self.NAMES:
            raise ValueError(f"Planetoid: unknown name {name!r}; valid names are {list(self.NAMES)}")
        folder = resolve_root(root) / "planetoid"
        check_raw_pickles(folder / name / "raw" / f"ind.{name.lower()}.{part}"
                          for part in ("x", "tx", "allx", "y", "ty", "ally", "graph"))
        check_processed(folder / name / "processed")
        dataset = _internet_set(
            lambda: PygPlanetoid(str(folder), name, split="public", transform=T.NormalizeFeatures()),
            f"Planetoid {name}", f"{folder}/{name}/raw",
            f"ind.{name.lower()}.x, .tx, .allx, .y, .ty, .ally, .graph, .test.index from github.com/kimiyoung/planetoid",
        )
        graph = dataset[0]
        masks = {"train": graph.train_mask, "val": graph.val_mask, "test": graph.test_mask}
        super().__init__(graph, split, repeats=repeats, splits={k: torch.nonzero(m).flatten() for k, m in masks.items()})


class OGBNodeGraph(NodeGraph):
    """An Open Graph Benchmark node set (`ogbn-arxiv`, ...) with OGB's split, read by the `ogb` package.

    As GraphMAE does for ogbn-arxiv: edges made undirected, features standardised per dimension.

    Args:
        name: an ogbn dataset name, e.g. "ogbn-arxiv".
        split: "all", "train", "val" or "test" (OGB's train / valid / test indices).
        root: data root; files go to `<root>/ogb/`.
        repeats: as in `NodeGraph`.
    """

    def __init__(self, name: str = "ogbn-arxiv", split: str = "all", root: str | None = None, repeats: int = 1):
        from torch_geometric.utils import to_undirected

        try:
            from ogb.nodeproppred import PygNodePropPredDataset
        except ImportError as err:
            raise ImportError(f"OGBNodeGraph({name!r}) reads OGB's files with the `ogb` package: "
                              "pip install ogb (it downloads the data set once, then works offline)") from err
        folder = resolve_root(root) / "ogb"
        for directory in (name.replace("-", "_"), f"{name.replace('-', '_')}_pyg"):  # ogb's layouts, new and old
            check_processed(folder / directory / "processed")
        dataset = _internet_set(lambda: PygNodePropPredDataset(name, root=str(folder)), f"OGB {name}",
                                f"{folder}/{name.replace('-', '_')}/raw", "see https://ogb.stanford.edu/docs/nodeprop/")
        graph = dataset[0].clone()
        graph.edge_index = to_undirected(graph.edge_index, num_nodes=graph.num_nodes)
        x = graph.x.float()
        graph.x = (x - x.mean(0)) / x.std(0).clamp(min=1e-12)
        graph.y = graph.y.view(-1).long()
        index = dataset.get_idx_split()
        super().__init__(graph, split, repeats=repeats,
                         splits={"train": index["train"], "val": index["valid"], "test": index["test"]})


class TUGraphs:
    """A graph-level TUDataset (MUTAG, PROTEINS, IMDB-BINARY, NCI1, ...) as `({"graph": Data}, class)` items.

    Node features are the set's one-hot node labels; sets without them (IMDB, COLLAB, REDDIT) get a
    one-hot node degree capped at `max_degree`, GraphMAE's choice. Graph-level papers report 10-fold
    cross-validation over the whole set; the harness holds a stratified `test_fraction` out instead
    (the `svm` protocol cross-validates C on the training graphs), the same split for the same seed.

    Args:
        name: a TUDataset name.
        split: "all", "train" or "test".
        root: data root; files go to `<root>/tudataset/<name>/`.
        test_fraction: share of each class held out as test.
        seed: seed of the split.
        max_degree: degree one-hot width - 1 for sets without node labels (larger degrees share the last slot).
    """

    def __init__(self, name: str = "MUTAG", split: str = "train", root: str | None = None,
                 test_fraction: float = 0.1, seed: int = 0, max_degree: int = 400):
        from torch_geometric.datasets import TUDataset
        from torch_geometric.utils import degree

        check_split(split, SPLITS, "TUGraphs")
        folder = resolve_root(root) / "tudataset"
        check_processed(folder / name / "processed")
        dataset = _internet_set(lambda: TUDataset(str(folder), name), f"TUDataset {name}", f"{folder}/{name}/raw",
                                f"{name}_A.txt, {name}_graph_indicator.txt, {name}_graph_labels.txt, "
                                f"{name}_node_labels.txt from https://www.chrsmrrs.com/graphkerneldatasets/{name}.zip")
        graphs = [dataset[k] for k in range(len(dataset))]
        if dataset.num_node_features == 0:
            for g in graphs:
                d = degree(g.edge_index[0], g.num_nodes).long().clamp(max=max_degree)
                g.x = torch.nn.functional.one_hot(d, max_degree + 1).float()
        y = np.asarray([int(g.y) for g in graphs], np.int64)
        chosen = stratified_split(y, test_fraction, seed)[split]
        self.name, self.split = name, split
        self.graphs = [graphs[k] for k in chosen]
        self.targets = y[chosen]
        self.classes = [str(c) for c in np.unique(y)]

    @property
    def num_node_features(self) -> int:
        return int(self.graphs[0].num_node_features)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> tuple[dict, int]:
        return {"graph": self.graphs[index]}, int(self.targets[index])

    def __repr__(self) -> str:
        return f"TUGraphs({self.name}, split={self.split}: {len(self)} graphs, node_features={self.num_node_features})"
