"""I-JEPA's multi-block masks: block sizes, disjoint context and targets, equal lengths, determinism."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssl_platform.masking.block import (
    block_shape,
    gather_tokens,
    multiblock_masks,
    place_block,
    sample_block_shape,
)


def as_cells(index, grid=(8, 8)):
    return {(int(i) // grid[1], int(i) % grid[1]) for i in index}


@settings(max_examples=20)
@given(seed=st.integers(0, 2**63 - 1))
def test_paper_settings_on_an_8x8_grid(seed):
    g = torch.Generator().manual_seed(seed)
    context, targets = multiblock_masks(16, (8, 8), generator=g)
    assert context.dtype == targets.dtype == torch.int64
    assert targets.shape[:2] == (4, 16) and context.shape[0] == 16
    nt = targets.shape[2]
    # 0.15-0.2 of 64 patches is 9.6-12.8; rounding h and w to integers allows 9..16
    assert 9 <= nt <= 16
    assert context.shape[1] >= 10  # min_keep
    for b in range(16):
        ctx = set(context[b].tolist())
        assert len(ctx) == context.shape[1] and context[b].tolist() == sorted(ctx)
        for m in range(4):
            cells = as_cells(targets[m, b])
            assert len(cells) == nt
            rows, cols = {r for r, _ in cells}, {c for _, c in cells}
            # a full rectangle: every (row, col) pair of its rows and columns is in it
            assert cells == {(r, c) for r in rows for c in cols}
            assert max(rows) - min(rows) + 1 == len(rows) and max(cols) - min(cols) + 1 == len(cols)
            assert not ctx & set(targets[m, b].tolist()), "context overlaps a target block"


def test_block_sizes_follow_scale_and_aspect_and_are_shared_by_the_batch():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        h, w = sample_block_shape((14, 14), (0.15, 0.2), (0.75, 1.5), g)
        # before rounding: area in [29.4, 39.2], h/w in [0.75, 1.5]; rounding moves each side by <= 0.5
        assert 0.15 * 196 * 0.75 <= h * w <= 0.2 * 196 * 1.3
        assert 0.75 * 0.8 <= h / w <= 1.5 * 1.25
    assert block_shape((8, 8), 1.0, 1.0) == (8, 8) and block_shape((8, 8), 0.01, 1.0) == (1, 1)
    assert block_shape((4, 16), 0.5, 4.0) == (4, 3)  # 11 rows wanted, clipped to the grid's 4
    _, targets = multiblock_masks(32, (8, 8), generator=torch.Generator().manual_seed(3))
    shapes = {(len({r for r, _ in as_cells(t)}), len({c for _, c in as_cells(t)})) for t in targets.flatten(0, 1)}
    assert len(shapes) == 1, f"block shapes differ within a batch: {shapes}"


def test_context_is_a_square_block_of_the_right_scale_before_targets_are_removed():
    g = torch.Generator().manual_seed(1)
    # tiny targets, so the context block is almost intact
    context, _ = multiblock_masks(64, (10, 10), num_targets=1, target_scale=(0.01, 0.01), generator=g)
    # 0.85-1.0 of 100 patches, square: 9x9 or 10x10, minus one target patch, cut to the batch minimum
    assert 80 - 1 <= context.shape[1] <= 100


def test_positions_are_drawn_per_image_and_cover_the_whole_grid():
    g = torch.Generator().manual_seed(0)
    seen = torch.zeros(8, 8)
    _, targets = multiblock_masks(200, (8, 8), generator=g)
    for t in targets.flatten(0, 1):
        seen.view(-1)[t] += 1
    assert (seen > 0).all(), "some patches, e.g. the last row or column, are never a target"
    assert len({tuple(t.tolist()) for t in targets[0]}) > 10


def test_same_generator_seed_same_masks_and_global_rng_is_used_by_default():
    a = multiblock_masks(8, (8, 8), generator=torch.Generator().manual_seed(5))
    b = multiblock_masks(8, (8, 8), generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    torch.manual_seed(7)
    c = multiblock_masks(8, (8, 8))
    torch.manual_seed(7)
    d = multiblock_masks(8, (8, 8))
    assert all(torch.equal(x, y) for x, y in zip(c, d))


def test_impossible_settings_fail_with_advice():
    with pytest.raises(ValueError, match="min_keep=15.*4x4 grid"):  # 4 targets always take 2+ of 16 patches
        multiblock_masks(2, (4, 4), min_keep=15, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="scale"):
        sample_block_shape((8, 8), (0.3, 0.2), (1.0, 1.0))
    with pytest.raises(ValueError, match="aspect"):
        sample_block_shape((8, 8), (0.1, 0.2), (0.0, 1.0))
    with pytest.raises(ValueError, match="num_targets"):
        multiblock_masks(2, (8, 8), num_targets=0)


def test_place_block_and_gather_tokens_against_loops():
    g = torch.Generator().manual_seed(2)
    block = place_block((6, 7), (2, 3), g)
    assert block.sum() == 6 and block.shape == (6, 7)
    x = torch.randn(3, 10, 4)
    index = torch.tensor([[0, 9, 3], [1, 1, 2], [5, 6, 7]])
    expected = torch.stack([torch.stack([x[b, i] for i in index[b]]) for b in range(3)])
    assert torch.equal(gather_tokens(x, index), expected)
    assert math.isclose(block_shape((8, 8), 0.2, 1.0)[0], 4)
