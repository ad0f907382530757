"""GraphMAE's scaled cosine error against a per-node loop."""

import math

import pytest
import torch

from ssl_platform.losses.cosine import scaled_cosine_error


def naive_sce(z, x, gamma):
    total = 0.0
    for zv, xv in zip(z.tolist(), x.tolist()):
        dot = sum(a * b for a, b in zip(zv, xv))
        nz, nx = math.sqrt(sum(a * a for a in zv)), math.sqrt(sum(b * b for b in xv))
        cos = dot / (max(nz, 1e-12) * max(nx, 1e-12))
        total += (1 - cos) ** gamma
    return total / len(z)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 3.0])
def test_matches_the_loop(gamma):
    g = torch.Generator().manual_seed(int(gamma))
    z, x = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    assert scaled_cosine_error(z, x, gamma).item() == pytest.approx(naive_sce(z, x, gamma), rel=1e-5)


def test_scale_invariant_zero_for_parallel_rows_and_gamma_down_weights_easy_nodes():
    x = torch.randn(4, 6)
    assert scaled_cosine_error(3.0 * x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert scaled_cosine_error(-x, x).item() == pytest.approx(2.0)
    # an easy node (cos near 1) contributes less with a larger gamma, relative to a hard one
    z = torch.stack([x[0] + 0.1 * torch.randn(6), -x[1]])
    easy1, hard1 = [scaled_cosine_error(z[i:i + 1], x[i:i + 1], 1.0) for i in range(2)]
    easy3, hard3 = [scaled_cosine_error(z[i:i + 1], x[i:i + 1], 3.0) for i in range(2)]
    assert easy3 / hard3 < easy1 / hard1


def test_bad_inputs():
    with pytest.raises(ValueError, match="gamma"):
        scaled_cosine_error(torch.ones(2, 2), torch.ones(2, 2), 0.5)
    with pytest.raises(ValueError, match="both be"):
        scaled_cosine_error(torch.ones(2, 2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="no masked nodes"):
        scaled_cosine_error(torch.ones(0, 2), torch.ones(0, 2))
