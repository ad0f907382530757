"""The GAT and GIN encoders: timm registry and spec round trip, shapes, pooling, checks."""

import pytest
import torch
from torch_geometric.data import Batch, Data

from ssl_platform.models.backbones import create_backbone, from_spec, spec


def ring(n, f, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.arange(n)
    edge_index = torch.cat([torch.stack([src, (src + 1) % n]), torch.stack([(src + 1) % n, src])], dim=1)
    return Data(x=torch.randn(n, f, generator=g), edge_index=edge_index)


@pytest.mark.parametrize(("name", "kwargs"), [("gat", {"hidden": 16, "heads": 4}), ("gin", {"hidden": 8})])
def test_build_shapes_and_spec_round_trip(name, kwargs):
    torch.manual_seed(0)
    enc = create_backbone(name, in_chans=5, **kwargs).eval()
    g = ring(12, 5)
    h = enc(g.x, g.edge_index)
    assert h.shape == (12, enc.num_features) and torch.equal(h, enc.forward_features(g.x, g.edge_index))
    assert torch.equal(enc.forward_head(h, pre_logits=True), h)
    again = from_spec(spec(enc)).eval()
    again.load_state_dict(enc.state_dict())  # strict
    assert torch.allclose(again(g.x, g.edge_index), h)


def test_pooling_per_graph_matches_separate_graphs():
    torch.manual_seed(0)
    enc = create_backbone("gin", in_chans=3, hidden=8, norm="none", pool="sum").eval()
    a, b = ring(5, 3, 1), ring(7, 3, 2)
    batch = Batch.from_data_list([a, b])
    pooled = enc.pool(enc(batch.x, batch.edge_index), batch.batch)
    alone = torch.stack([enc(g.x, g.edge_index).sum(0) for g in (a, b)])
    assert pooled.shape == (2, 8) and torch.allclose(pooled, alone, atol=1e-5)


def test_bad_settings():
    with pytest.raises(ValueError, match="divisible by heads"):
        create_backbone("gat", in_chans=3, hidden=10, heads=4)
    with pytest.raises(ValueError, match="norm must be"):
        create_backbone("gin", in_chans=3, norm="group")
    with pytest.raises(ValueError, match="pool must be"):
        create_backbone("gat", in_chans=3, hidden=8, heads=2, pool="attention")
