"""The GAT and GIN encoders: timm registry and spec round trip, shapes, pooling, checks."""

import pytest
import torch
from torch_geometric.data import Batch, Data

from ssl_platform.checkpoint.io import CheckpointError, load_state_strict
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


# ---- GAT residual connections: off by default (GraphMAE's code); checkpoints of the always-residual GAT still load


def one_layer_pair():
    """A 1-layer GAT with residual maps and the same GAT without, sharing every other weight."""
    torch.manual_seed(0)
    with_res = create_backbone("gat", in_chans=5, hidden=8, heads=2, num_layers=1, residual=True).eval()
    plain = create_backbone("gat", in_chans=5, hidden=8, heads=2, num_layers=1).eval()
    plain.load_state_dict({k: v for k, v in with_res.state_dict().items() if ".res." not in k})
    return with_res, plain


def test_residual_is_off_by_default_and_adds_a_linear_map_of_the_layer_input():
    assert all(conv.res is None for conv in create_backbone("gat", in_chans=5, hidden=8, heads=2).convs)
    with_res, plain = one_layer_pair()
    g = ring(9, 5)
    w = with_res.convs[0].res.weight  # [hidden, in], no bias
    assert w.shape == (8, 5) and with_res.convs[0].res.bias is None
    # layer output before norm (none) and PReLU: attention output + x W^T
    expected = plain.acts[0](plain.convs[0](g.x, g.edge_index) + g.x @ w.T)
    assert torch.allclose(with_res(g.x, g.edge_index), expected, atol=1e-6)
    assert not torch.allclose(plain(g.x, g.edge_index), expected, atol=1e-3)


def test_a_checkpoint_of_the_always_residual_gat_loads_into_a_default_gat_and_runs_as_trained():
    torch.manual_seed(0)
    old = create_backbone("gat", in_chans=5, hidden=8, heads=2, num_layers=2, residual=True).eval()
    new = create_backbone("gat", in_chans=5, hidden=8, heads=2, num_layers=2).eval()  # as its spec rebuilds it
    new.load_state_dict(old.state_dict())  # strict: the residual maps are adopted, not unexpected
    g = ring(9, 5)
    assert torch.equal(new(g.x, g.edge_index), old(g.x, g.edge_index))
    assert set(new.state_dict()) == set(old.state_dict())


def test_adopt_checkpoint_reads_keys_under_a_prefix_and_leaves_layers_without_a_map_alone():
    torch.manual_seed(0)
    old = create_backbone("gat", in_chans=5, hidden=8, heads=2, num_layers=2, residual=True)
    state = {f"backbone.{k}": v for k, v in old.state_dict().items() if not k.startswith("convs.1.res")}
    new = create_backbone("gat", in_chans=5, hidden=8, heads=2, num_layers=2)
    new.adopt_checkpoint(state, "backbone.")
    assert new.convs[0].res is not None and new.convs[0].res.weight.shape == (8, 5) and new.convs[1].res is None


def test_gin_eps_fixed_or_learnt_and_checkpoints_load_either_way():
    torch.manual_seed(0)
    learnt = create_backbone("gin", in_chans=3, hidden=8)
    fixed = create_backbone("gin", in_chans=3, hidden=8, train_eps=False)
    assert all(isinstance(c.eps, torch.nn.Parameter) for c in learnt.convs)
    assert not any(n.endswith("eps") for n, _ in fixed.named_parameters())  # a buffer, fixed at 0
    assert all(float(c.eps) == 0.0 for c in fixed.convs)
    fixed.load_state_dict(learnt.state_dict())  # strict both ways: eps is in both state dicts
    learnt.load_state_dict(fixed.state_dict())


def test_gin_with_eps_one_sums_as_the_official_layer_on_a_graph_with_self_loops():
    """GraphMAE's GIN (eps 0) on graphs with a self-loop per node == ours (eps 1) on the same graph without them."""
    torch.manual_seed(0)
    ours = create_backbone("gin", in_chans=3, hidden=8, num_layers=1, norm="none", eps=1.0, train_eps=False).eval()
    official = create_backbone("gin", in_chans=3, hidden=8, num_layers=1, norm="none", train_eps=False).eval()
    official.load_state_dict({k: (torch.zeros(1) if k.endswith("eps") else v) for k, v in ours.state_dict().items()})
    g = ring(7, 3)
    loops = torch.stack([torch.arange(7), torch.arange(7)])
    by_hand = torch.stack([2 * g.x[i] + g.x[(i + 1) % 7] + g.x[(i - 1) % 7] for i in range(7)])
    mlp = ours.convs[0].nn
    assert torch.allclose(ours(g.x, g.edge_index), ours.acts[0](mlp(by_hand)), atol=1e-6)
    assert torch.allclose(ours(g.x, g.edge_index), official(g.x, torch.cat([g.edge_index, loops], 1)), atol=1e-6)


def test_a_residual_map_of_another_shape_is_not_adopted_and_the_strict_load_names_it():
    """A file (someone else's) whose residual map does not fit the layer must fail at load, by key."""
    old = create_backbone("gat", in_chans=5, hidden=8, heads=2, num_layers=1, residual=True)
    state = dict(old.state_dict())
    state["convs.0.res.weight"] = torch.zeros(8, 7)  # in width 7, the layer takes 5
    new = create_backbone("gat", in_chans=5, hidden=8, heads=2, num_layers=1)
    with pytest.raises(CheckpointError, match=r"1 unexpected \(e.g. \['convs.0.res.weight'\]\)"):
        load_state_strict(new, state, "their.safetensors")
    assert new.convs[0].res is None
