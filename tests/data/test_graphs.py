"""Node-level graphs: the kNN edges against a brute-force search, node splits, the karate club."""

import numpy as np
import pytest

from ssl_platform.data.datasets.graphs import ImageKNNGraph, KarateClub, knn_edges


def test_knn_edges_match_brute_force_and_are_symmetric():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    edges = knn_edges(x, 3)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :3]
    expected = {(i, int(j)) for i in range(40) for j in nearest[i]}
    expected |= {(j, i) for i, j in expected}
    assert {tuple(e) for e in edges.T.tolist()} == expected
    assert (edges[0] != edges[1]).all()


def test_image_knn_graph_links_mostly_same_class_images_and_splits_nodes():
    class Images:  # two well-separated classes of 8x8 "images"
        rng = np.random.default_rng(1)
        images = np.concatenate([rng.integers(0, 60, (30, 8, 8)), rng.integers(190, 255, (30, 8, 8))]).astype(np.uint8)
        targets = np.repeat([0, 1], 30)
        classes = ("dark", "bright")

    train = ImageKNNGraph(Images(), k=4, split="train", test_fraction=0.5, seed=0, repeats=3)
    test = ImageKNNGraph(Images(), k=4, split="test", test_fraction=0.5, seed=0)
    g = train.graph
    assert g.x.shape == (60, 64) and float(g.x.max()) <= 1.0
    src, dst = g.edge_index
    assert (g.y[src] == g.y[dst]).float().mean() == 1.0
    assert not set(train.nodes.tolist()) & set(test.nodes.tolist()) and len(train.nodes) + len(test.nodes) == 60
    assert np.bincount(train.targets).tolist() == [15, 15]
    assert len(train) == 3 and train[2][0]["graph"] is g and train[0][1] == -1
    with pytest.raises(IndexError):
        train[3]


def test_karate_club():
    club = KarateClub(split="all")
    assert club.graph.num_nodes == 34 and len(club.nodes) == 34 and len(club.classes) == 4
    with pytest.raises(ValueError, match="unknown split"):
        KarateClub(split="val")


# ---- sets that download once: their readers, fed raw files written here in each format

def write_planetoid(raw, name="cora", classes=3, per_class=10, n_all=560, n_test=100, features=12, seed=0):
    """Planetoid's raw layout: x/y the labelled training rows, allx/ally every non-test row (the 500
    after the training rows are the validation nodes), tx/ty the test rows, listed in test.index."""
    import pickle

    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n = n_all + n_test
    labels = rng.integers(0, classes, n)
    feats = (rng.random((n, features)) < 0.3).astype(np.float32)
    feats[np.arange(n), labels] = 1.0  # make the class visible
    onehot = np.eye(classes, dtype=np.float32)[labels]
    test_index = np.arange(n_all, n)[::-1]  # unsorted on purpose: the reader sorts
    n_train = classes * per_class
    graph = {v: [int(u) for u in rng.choice(n, 3) if u != v] for v in range(n)}
    items = {"x": sp.csr_matrix(feats[:n_train]), "y": onehot[:n_train], "allx": sp.csr_matrix(feats[:n_all]),
             "ally": onehot[:n_all], "tx": sp.csr_matrix(feats[test_index]), "ty": onehot[test_index], "graph": graph}
    raw.mkdir(parents=True)
    for key, value in items.items():
        with open(raw / f"ind.{name}.{key}", "wb") as f:
            pickle.dump(value, f)
    (raw / f"ind.{name}.test.index").write_text("\n".join(str(i) for i in test_index) + "\n")
    return feats, labels, n_train


def test_planetoid_public_split_and_row_normalised_features(tmp_path):
    from ssl_platform.data.datasets.graphs import Planetoid

    feats, labels, n_train = write_planetoid(tmp_path / "planetoid" / "Cora" / "raw")
    train = Planetoid("Cora", split="train", root=tmp_path)
    val, test = Planetoid("Cora", split="val", root=tmp_path), Planetoid("Cora", split="test", root=tmp_path)
    assert train.nodes.tolist() == list(range(n_train)) and val.nodes.tolist() == list(range(n_train, n_train + 500))
    assert test.nodes.tolist() == list(range(560, 660))
    assert (train.targets == labels[:n_train]).all() and (test.targets == labels[560:]).all()
    x = train.graph.x.numpy()
    np.testing.assert_allclose(x, feats / feats.sum(1, keepdims=True), rtol=1e-6)
    everything = Planetoid("Cora", root=tmp_path, repeats=4)
    assert len(everything) == 4 and everything[3][0]["graph"].num_nodes == 660 and len(everything.nodes) == 660
    with pytest.raises(ValueError, match=r"unknown split 'valid'; valid splits are \['all', 'train', 'val', 'test'\]"):
        Planetoid("Cora", split="valid", root=tmp_path)
    with pytest.raises(ValueError, match=r"unknown name 'cora'; valid names are \['Cora', 'CiteSeer', 'PubMed'\]"):
        Planetoid("cora", root=tmp_path)


def test_a_failed_download_says_where_the_files_go(tmp_path, monkeypatch):
    import torch_geometric.datasets.planetoid as pyg_planetoid

    from ssl_platform.data.datasets.graphs import Planetoid

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(pyg_planetoid.fs, "cp", offline)  # how torch_geometric fetches the raw files
    with pytest.raises(RuntimeError, match=r"Planetoid PubMed: could not read or download it \(OSError: <urlopen.*"
                                           r"needs internet once; or put the raw files into .*planetoid/PubMed/raw/"):
        Planetoid("PubMed", root=tmp_path)


def write_tu(raw, name, graphs, node_labels=True):
    """TUDataset's text layout (1-based node ids): A, graph_indicator, graph_labels, node_labels."""
    raw.mkdir(parents=True)
    edges, indicator, glabels, nlabels, offset = [], [], [], [], 1
    for k, (n, pairs, label) in enumerate(graphs):
        indicator += [k + 1] * n
        nlabels += [(offset + i) % 3 for i in range(n)]
        edges += [(offset + a, offset + b) for a, b in pairs] + [(offset + b, offset + a) for a, b in pairs]
        glabels.append(label)
        offset += n
    (raw / f"{name}_A.txt").write_text("".join(f"{a}, {b}\n" for a, b in edges))
    (raw / f"{name}_graph_indicator.txt").write_text("".join(f"{i}\n" for i in indicator))
    (raw / f"{name}_graph_labels.txt").write_text("".join(f"{y}\n" for y in glabels))
    if node_labels:
        (raw / f"{name}_node_labels.txt").write_text("".join(f"{y}\n" for y in nlabels))


def tu_graphs(count=40):
    """Paths (label 1, odd ids -1 in the file) and stars (label 0), 3 to 7 nodes."""
    out = []
    for k in range(count):
        n = 3 + k % 5
        pairs = [(i, i + 1) for i in range(n - 1)] if k % 2 else [(0, i) for i in range(1, n)]
        out.append((n, pairs, 1 if k % 2 else -1))
    return out


def test_tu_graphs_split_node_labels_and_degree_features(tmp_path):
    from ssl_platform.data.datasets.graphs import TUGraphs

    graphs = tu_graphs()
    write_tu(tmp_path / "tudataset" / "TOY" / "raw", "TOY", graphs)
    train = TUGraphs("TOY", split="train", root=tmp_path, test_fraction=0.25, seed=1)
    test = TUGraphs("TOY", split="test", root=tmp_path, test_fraction=0.25, seed=1)
    assert len(train) == 30 and len(test) == 10 and sorted(test.targets.tolist()) == [0] * 5 + [1] * 5
    everything = TUGraphs("TOY", split="all", root=tmp_path)
    for k, (sample, label) in enumerate(everything):
        n, pairs, raw_label = graphs[k]
        g = sample["graph"]
        assert label == (raw_label == 1) and g.num_nodes == n and g.num_edges == 2 * len(pairs)
        assert g.x.shape == (n, 3) and g.x.argmax(1).tolist() == [(i + sum(m for m, _, _ in graphs[:k]) + 1) % 3
                                                                  for i in range(n)]
    assert not {id(g) for g in train.graphs} & {id(g) for g in test.graphs}
    # no node labels in the files: one-hot degree, capped
    write_tu(tmp_path / "tudataset" / "PLAIN" / "raw", "PLAIN", graphs, node_labels=False)
    plain = TUGraphs("PLAIN", split="all", root=tmp_path, max_degree=3)
    star = plain[4][0]["graph"]  # star with 7 nodes: hub degree 6 -> capped at 3
    assert plain.num_node_features == 4 and star.x.argmax(1).tolist() == [3] + [1] * 6


def test_ogb_node_graph_without_ogb_names_the_package(monkeypatch):
    import builtins

    from ssl_platform.data.datasets.graphs import OGBNodeGraph

    real_import = builtins.__import__

    def no_ogb(name, *args, **kwargs):
        if name.startswith("ogb"):
            raise ImportError("No module named 'ogb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ogb)
    with pytest.raises(ImportError, match=r"reads OGB's files with the `ogb` package: pip install ogb"):
        OGBNodeGraph("ogbn-arxiv")


def test_ogb_node_graph_uses_ogb_split_undirected_edges_and_standardised_features(monkeypatch, tmp_path):
    import sys
    import types

    import torch
    from torch_geometric.data import Data

    from ssl_platform.data.datasets.graphs import OGBNodeGraph

    class FakeOGB:  # the two calls OGBNodeGraph makes on ogb's PygNodePropPredDataset
        def __init__(self, name, root):
            self.name, self.root = name, root

        def __getitem__(self, index):
            g = torch.Generator().manual_seed(0)
            return Data(x=torch.randn(10, 4, generator=g) * 5 + 3, edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]),
                        y=torch.arange(10).view(10, 1) % 2)

        def get_idx_split(self):
            return {"train": torch.tensor([0, 1, 2, 3]), "valid": torch.tensor([4, 5]), "test": torch.tensor([9, 8, 7])}

    module = types.ModuleType("ogb.nodeproppred")
    module.PygNodePropPredDataset = FakeOGB
    monkeypatch.setitem(sys.modules, "ogb", types.ModuleType("ogb"))
    monkeypatch.setitem(sys.modules, "ogb.nodeproppred", module)
    test = OGBNodeGraph("ogbn-arxiv", split="test", root=tmp_path)
    assert test.nodes.tolist() == [7, 8, 9] and test.targets.tolist() == [1, 0, 1]
    assert OGBNodeGraph("ogbn-arxiv", split="val", root=tmp_path).nodes.tolist() == [4, 5]
    graph = test.graph
    assert sorted(map(tuple, graph.edge_index.t().tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)]
    np.testing.assert_allclose(graph.x.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(graph.x.std(0).numpy(), 1, atol=1e-5)
