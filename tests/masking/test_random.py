"""Exact-count random masks (masking/random.py)."""

import pytest
import torch

from ssl_platform.masking.random import column_subsets, num_visible, random_keep_mask


def test_visible_count_rounds_like_spark():
    assert num_visible(49, 0.6) == 20  # the paper's 7x7 grid at 224 px
    assert num_visible(16, 0.6) == 6
    assert num_visible(4, 0.75) == 1


@pytest.mark.parametrize("cells,ratio", [(1, 0.5), (4, 0.9), (4, 0.01), (49, 0.0), (49, 1.0)])
def test_a_mask_that_hides_nothing_or_everything_is_refused(cells, ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        num_visible(cells, ratio)


def test_every_row_keeps_exactly_the_count_and_rows_differ():
    mask = random_keep_mask(256, 49, 20, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (256, 49)
    assert (mask.sum(dim=1) == 20).all()
    assert len({tuple(r.tolist()) for r in mask}) > 250


def test_cells_are_kept_uniformly_and_the_generator_fixes_the_draw():
    g = torch.Generator().manual_seed(1)
    mask = random_keep_mask(20000, 16, 6, generator=g)
    freq = mask.float().mean(dim=0)
    assert torch.allclose(freq, torch.full((16,), 6 / 16), atol=0.02)
    a = random_keep_mask(8, 16, 6, generator=torch.Generator().manual_seed(5))
    b = random_keep_mask(8, 16, 6, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    torch.manual_seed(3)
    c = random_keep_mask(8, 16, 6)
    torch.manual_seed(3)
    assert torch.equal(c, random_keep_mask(8, 16, 6))  # the global RNG, which the engine checkpoints


def test_count_out_of_range_is_an_error():
    with pytest.raises(ValueError, match=r"num_keep must be in \[0, 4\]"):
        random_keep_mask(2, 4, 5)


# ---- T-JEPA's column subsets


@pytest.mark.parametrize("columns", [4, 13, 30, 64])
def test_column_subsets_are_disjoint_from_the_context_and_sized_by_the_fractions(columns):
    g = torch.Generator().manual_seed(columns)
    for _ in range(10):
        context, targets = column_subsets(8, columns, generator=g)
        n_c, n_t = context.shape[1], targets.shape[2]
        assert targets.shape[:2] == (4, 8) and n_c + n_t <= columns
        assert max(1, round(0.136 * columns)) <= n_c <= max(1, round(0.368 * columns))
        assert max(1, round(0.156 * columns)) <= n_t <= max(1, round(0.622 * columns))
        for b in range(8):
            ctx = context[b].tolist()
            assert ctx == sorted(set(ctx)) and all(0 <= c < columns for c in ctx)
            for m in range(4):
                t = targets[m, b].tolist()
                assert t == sorted(set(t)) and not set(t) & set(ctx)


def test_column_subsets_vary_per_row_are_seeded_and_fail_clearly():
    a = column_subsets(16, 30, generator=torch.Generator().manual_seed(1))
    b = column_subsets(16, 30, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len({tuple(r.tolist()) for r in a[0]}) > 1
    with pytest.raises(ValueError, match="at least 2 columns"):
        column_subsets(2, 1)
    with pytest.raises(ValueError, match="no room"):
        column_subsets(2, 10, context_fraction=(0.8, 0.9), target_fraction=(0.5, 0.6))
