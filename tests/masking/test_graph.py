"""GraphMAE's node masks: counts, replaced nodes inside the mask, the corrupted input row by row,
re-masking, determinism; drop-edge against a naive loop."""

import pytest
import torch

from ssl_platform.masking.graph import corrupt_features, drop_edges, mask_nodes, remask


@pytest.mark.parametrize(("n", "rate", "replace"), [(34, 0.5, 0.05), (100, 0.75, 0.1), (10, 0.3, 0.0)])
def test_counts_and_subsets(n, rate, replace):
    masked, replaced, sources = mask_nodes(n, rate, replace, generator=torch.Generator().manual_seed(n))
    assert len(masked) == int(rate * n) and len(set(masked.tolist())) == len(masked)
    assert len(replaced) == int(replace * len(masked)) == len(sources)
    assert set(replaced.tolist()) <= set(masked.tolist()) and len(set(replaced.tolist())) == len(replaced)
    assert ((0 <= masked) & (masked < n)).all() and ((0 <= sources) & (sources < n)).all()


def test_fresh_per_draw_and_seeded():
    a = mask_nodes(50, 0.5, 0.2, generator=torch.Generator().manual_seed(1))
    b = mask_nodes(50, 0.5, 0.2, generator=torch.Generator().manual_seed(1))
    c = mask_nodes(50, 0.5, 0.2, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[0], c[0])


def test_corrupted_input_row_by_row_and_the_token_learns():
    x = torch.randn(20, 4)
    masked, replaced, sources = mask_nodes(20, 0.5, 0.4, generator=torch.Generator().manual_seed(0))
    token = torch.nn.Parameter(torch.randn(1, 4))
    before = x.clone()
    out = corrupt_features(x, masked, replaced, sources, token)
    for v in range(20):
        if v in replaced.tolist():
            assert torch.equal(out[v], x[sources[replaced.tolist().index(v)]])
        elif v in masked.tolist():
            assert torch.equal(out[v], token[0].detach())
        else:
            assert torch.equal(out[v], x[v])
    out.sum().backward()
    assert token.grad is not None and token.grad.abs().sum() > 0
    assert torch.equal(x, before)  # the input itself is untouched


def test_remask_zeros_exactly_the_masked_codes():
    h = torch.randn(10, 3) + 5.0
    masked = torch.tensor([1, 4, 7])
    out = remask(h, masked)
    assert (out[masked] == 0).all()
    keep = torch.tensor([i for i in range(10) if i not in (1, 4, 7)])
    assert torch.equal(out[keep], h[keep]) and (h[masked] != 0).all()


def test_bad_rates():
    with pytest.raises(ValueError, match="mask_rate"):
        mask_nodes(10, 1.0)
    with pytest.raises(ValueError, match="replace_rate"):
        mask_nodes(10, 0.5, 1.0)
    with pytest.raises(ValueError, match="masks no node"):
        mask_nodes(3, 0.2)


# ---- drop-edge (GraphMAE's drop_edge_rate)


def edges_with_self_loops(n=40, e=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    loops = torch.arange(0, n, 3)
    return torch.cat([torch.stack([src, dst]), torch.stack([loops, loops])], 1)[:, torch.randperm(e + len(loops), generator=g)]


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_drop_edges_keeps_what_a_naive_loop_keeps(rate):
    edge_index = edges_with_self_loops()
    out = drop_edges(edge_index, rate, generator=torch.Generator().manual_seed(3))
    u = torch.rand(edge_index.shape[1], generator=torch.Generator().manual_seed(3))  # the same draws, one per edge
    kept = []
    for e in range(edge_index.shape[1]):
        s, d = int(edge_index[0, e]), int(edge_index[1, e])
        if s == d or float(u[e]) >= rate:  # a self-loop always stays; any other edge with probability 1 - rate
            kept.append((s, d))
    assert [tuple(c) for c in out.t().tolist()] == kept


def test_drop_edges_keeps_about_one_minus_the_rate_and_every_self_loop():
    n = 1000
    src = torch.randint(0, n, (20000,), generator=torch.Generator().manual_seed(0))
    edge_index = torch.stack([src, (src + 1) % n])  # no self-loops
    out = drop_edges(edge_index, 0.5, generator=torch.Generator().manual_seed(1))
    assert abs(out.shape[1] / 20000 - 0.5) < 0.02  # 0.5 +- 5.7 binomial standard deviations
    loops = torch.stack([torch.arange(n), torch.arange(n)])
    with_loops = drop_edges(torch.cat([edge_index, loops], 1), 0.9, generator=torch.Generator().manual_seed(1))
    assert (with_loops[0] == with_loops[1]).sum() == n


def test_drop_edges_is_seeded_and_fresh_per_draw():
    edge_index = edges_with_self_loops()
    a = drop_edges(edge_index, 0.5, generator=torch.Generator().manual_seed(7))
    b = drop_edges(edge_index, 0.5, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    first, second = drop_edges(edge_index, 0.5, generator=gen), drop_edges(edge_index, 0.5, generator=gen)
    assert torch.equal(a, b) and torch.equal(a, first) and not torch.equal(first, second)


def test_drop_rate_zero_returns_the_graph_itself_and_draws_nothing():
    edge_index = edges_with_self_loops()
    state = torch.get_rng_state()
    assert drop_edges(edge_index, 0.0) is edge_index
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="drop_rate"):
        drop_edges(edge_index, 1.0)
    with pytest.raises(ValueError, match="drop_rate"):
        drop_edges(edge_index, -0.1)
