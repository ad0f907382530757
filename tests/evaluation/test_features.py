"""extract_features: order, values against a hand-batched forward, eval mode, mode restore, errors;
the progress bar of the embedding loop (terminal only)."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import timm
import torch
from torch import nn
from tqdm import tqdm

from ssl_platform.data.datasets import ArrayImages
from ssl_platform.data.transforms import EvalTransform
from ssl_platform.evaluation.features import extract_features


class TinyBackbone(nn.Module):
    """timm's three members around a conv + BatchNorm, so eval vs train mode changes the output."""

    def __init__(self, in_chans=1, width=6):
        super().__init__()
        self.num_features = width
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.dropout = nn.Dropout(0.5)

    def forward_features(self, x):
        return self.dropout(torch.relu(self.bn(self.conv(x))))  # [B, D, H, W]

    def forward_head(self, x, pre_logits=False):
        return x.mean(dim=(2, 3))  # [B, D]


def random_images(n=37, size=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 4, n)
    return ArrayImages(images, labels, ["a", "b", "c", "d"])


def reference(backbone, dataset, transform):
    """One forward pass over all images, batched by hand, in eval mode."""
    x = torch.stack([transform(dataset[i][0])["image"] for i in range(len(dataset))])
    backbone.eval()
    with torch.no_grad():
        return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("batch_size", [1, 8, 256])
def test_matches_hand_batched_forward_in_dataset_order(batch_size):
    torch.manual_seed(0)
    backbone, data, transform = TinyBackbone(), random_images(), EvalTransform(8, channels=1)
    with torch.no_grad():  # non-trivial running stats, so eval-mode BN is not the identity
        backbone.bn.running_mean.uniform_(-1, 1)
        backbone.bn.running_var.uniform_(0.5, 2)
    feats, labels = extract_features(backbone, data, transform, batch_size=batch_size)
    assert feats.shape == (37, 6) and feats.dtype == torch.float32 and not feats.requires_grad
    assert labels.dtype == torch.int64 and labels.tolist() == data.targets.tolist()
    torch.testing.assert_close(feats, reference(backbone, data, transform), rtol=1e-5, atol=1e-6)


def test_runs_in_eval_mode_and_restores_each_module_mode():
    torch.manual_seed(0)
    backbone, data, transform = TinyBackbone(), random_images(), EvalTransform(8, channels=1)
    backbone.train()
    backbone.dropout.eval()  # a caller's frozen part must stay as it was, not be flipped to train
    stats = backbone.bn.running_mean.clone()
    first, _ = extract_features(backbone, data, transform, batch_size=5)
    second, _ = extract_features(backbone, data, transform, batch_size=5)
    torch.testing.assert_close(first, second)  # no dropout noise, no batch statistics
    torch.testing.assert_close(backbone.bn.running_mean, stats)  # BN did not update its statistics
    assert backbone.training and backbone.bn.training and backbone.conv.training
    assert not backbone.dropout.training
    backbone.eval()
    extract_features(backbone, data, transform)
    assert not any(m.training for m in backbone.modules())


def test_timm_resnet_gives_pooled_pre_logits():
    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", num_classes=0, in_chans=1)
    data = random_images(n=6, size=32)
    feats, labels = extract_features(backbone, data, EvalTransform(32, channels=1), batch_size=4)
    assert feats.shape == (6, backbone.num_features) == (6, 512)
    assert torch.isfinite(feats).all() and len(labels) == 6


def test_mode_is_restored_when_the_forward_fails():
    class Broken(TinyBackbone):
        def forward_features(self, x):
            raise RuntimeError("boom")

    backbone = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        extract_features(backbone, random_images(), EvalTransform(8, channels=1))
    assert all(m.training for m in backbone.modules())


def test_errors_say_what_to_do():
    with pytest.raises(KeyError, match="EvalTransform"):
        extract_features(TinyBackbone(), random_images(), lambda image: {"views": [torch.zeros(1, 8, 8)]})
    empty = ArrayImages(np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64), [])
    with pytest.raises(ValueError, match="empty"):
        extract_features(TinyBackbone(), empty, EvalTransform(8, channels=1))


def test_graph_features_pool_each_graph_in_dataset_order():
    from torch_geometric.data import Data

    from ssl_platform.evaluation.features import extract_graph_features
    from ssl_platform.models.backbones import create_backbone

    g = torch.Generator().manual_seed(0)

    def ring(n):
        src = torch.arange(n)
        edges = torch.cat([torch.stack([src, (src + 1) % n]), torch.stack([(src + 1) % n, src])], dim=1)
        return Data(x=torch.randn(n, 4, generator=g), edge_index=edges)

    graphs = [ring(n) for n in (3, 7, 5, 4, 6)]

    class Graphs:
        def __len__(self):
            return len(graphs)

        def __getitem__(self, i):
            return {"graph": graphs[i]}, i % 2

    torch.manual_seed(0)
    enc = create_backbone("gin", in_chans=4, hidden=8, pool="sum").eval()
    feats, labels = extract_graph_features(enc, Graphs(), batch_size=2)
    with torch.no_grad():
        alone = torch.stack([enc(d.x, d.edge_index).sum(0) for d in graphs])
    assert feats.shape == (5, 8) and labels.tolist() == [0, 1, 0, 1, 0]
    assert torch.allclose(feats, alone, atol=1e-5)


# ---- the one embedding contract (`models.embedding`) and the loop every extractor shares (`features`)


def test_embed_batch_reads_the_batchs_own_kind_of_sample():
    from torch_geometric.data import Batch, Data

    from ssl_platform.models.backbones import create_backbone
    from ssl_platform.models.embedding import batch_modality, embed_batch

    torch.manual_seed(0)
    image = TinyBackbone().eval()
    x = torch.randn(3, 1, 8, 8)
    assert batch_modality({"image": x, "label": 0}) == "image"
    torch.testing.assert_close(embed_batch(image, {"image": x}), image.forward_head(image.forward_features(x)))

    gin = create_backbone("gin", in_chans=4, hidden=8, pool="sum").eval()
    a, b = (Data(x=torch.randn(n, 4), edge_index=torch.tensor([[0, 1], [1, 0]])) for n in (3, 5))
    assert embed_batch(gin, {"graph": a}).shape == (3, 8)  # one graph: a node-level task, one row per node
    one = Batch.from_data_list([a])  # a batch of one graph: one row for the graph
    torch.testing.assert_close(embed_batch(gin, {"graph": one}), gin(a.x, a.edge_index).sum(0, keepdim=True))
    assert embed_batch(gin, {"graph": Batch.from_data_list([a, b])}).shape == (2, 8)

    class Rows(nn.Module):
        def forward_features(self, x_num, x_cat):
            return torch.cat([x_num, x_cat.float()], 1) if x_cat is not None else x_num

        def forward_head(self, x, pre_logits=False):
            return x

    rows = {"x_num": torch.ones(2, 3, dtype=torch.float64), "x_cat": torch.ones(2, 1, dtype=torch.int32)}
    got = embed_batch(Rows(), rows)
    assert got.shape == (2, 4) and got.dtype == torch.float32  # cast to the table backbone's input types
    assert embed_batch(Rows(), {"x_num": torch.ones(2, 3)}).shape == (2, 3)  # no categorical columns
    with pytest.raises(KeyError, match=r"batches have keys \['index', 'views'\]"):
        batch_modality({"views": [x], "index": 0})
    with pytest.raises(KeyError, match=r"a graph embedding needs \['graph'\].*Molecules"):
        embed_batch(image, {"image": x}, modality="graph")


def test_embed_dataset_runs_a_methods_own_embed_in_eval_mode():
    from ssl_platform.features import embed_dataset

    class Doubled(nn.Module):  # a stand-in for a Method whose embed is not the backbone's pooled features
        def __init__(self):
            super().__init__()
            self.backbone, self.calls = TinyBackbone(), 0

        def embed(self, batch):
            self.calls += 1
            assert not self.training and torch.is_inference_mode_enabled()
            return 2 * self.backbone.forward_head(self.backbone.forward_features(batch["image"]))

    torch.manual_seed(0)
    method, data, transform = Doubled().train(), random_images(), EvalTransform(8, channels=1)
    feats, labels = embed_dataset(method, data, transform, embed=method.embed, batch_size=10)
    assert method.calls == 4 and method.training and method.backbone.bn.training  # modes restored
    torch.testing.assert_close(feats, 2 * reference(method.backbone, data, transform), rtol=1e-5, atol=1e-6)
    assert labels.tolist() == data.targets.tolist()


def test_node_split_embeds_the_whole_graph_and_leaves_the_datasets_graph_alone():
    from torch_geometric.data import Data

    from ssl_platform.evaluation.features import extract_node_features
    from ssl_platform.models.backbones import create_backbone

    torch.manual_seed(0)
    graph = Data(x=torch.randn(6, 4), edge_index=torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]),
                 y=torch.tensor([0, 1, 0, 1, 0, 1]))
    before = dict(graph.items())

    class Split:  # a node-level task's split: the whole graph and this split's nodes
        def __init__(self):
            self.graph, self.nodes = graph, [4, 1]

    gat = create_backbone("gat", in_chans=4, hidden=8, heads=2).train()
    feats, labels = extract_node_features(gat, Split())
    with torch.no_grad():
        whole = gat.eval()(graph.x, graph.edge_index)
    torch.testing.assert_close(feats, whole[[4, 1]])
    assert labels.tolist() == [0, 1]
    assert dict(graph.items()).keys() == before.keys()
    assert all(graph[k] is v for k, v in before.items())  # the same tensors, not moved or replaced
    with pytest.raises(TypeError, match=r"needs a node split with .graph"):
        extract_node_features(gat, random_images())


class Terminal(io.StringIO):
    """stderr as a terminal: what a progress bar is drawn on."""

    def isatty(self):
        return True


@pytest.mark.parametrize("stream, progress, drawn", [(Terminal, True, True), (Terminal, False, False),
                                                     (io.StringIO, True, False)])
def test_a_bar_counts_the_samples_on_a_terminal_only_and_never_with_progress_false(monkeypatch, stream, progress,
                                                                                   drawn):
    from ssl_platform.features import embed_dataset

    monkeypatch.setattr(sys, "stderr", stream())
    monkeypatch.setattr(tqdm, "monitor_interval", 0)
    data, transform = random_images(), EvalTransform(8, channels=1)
    feats, _ = embed_dataset(TinyBackbone(), data, transform, batch_size=10, progress=progress, caller="extract")
    out = sys.stderr.getvalue()
    assert feats.shape == (37, 6)
    assert ("extract" in out and "0/37" in out) == drawn and (out == "") == (not drawn)
