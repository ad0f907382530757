"""GraphMAE's node masks: counts, replaced nodes inside the mask, the corrupted input row by row,
re-masking, determinism."""

import pytest
import torch

from ssl_platform.masking.graph import corrupt_features, mask_nodes, remask


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
