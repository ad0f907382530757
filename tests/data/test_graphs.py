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
