"""I-JEPA's multi-block masks: block sizes, disjoint context and targets, equal lengths, determinism, and the
official collator's sampling against a naive restatement of it."""

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssl_platform.masking.block import (
    block_shape,
    check_official_collator,
    gather_tokens,
    multiblock_masks,
    official_block_shape,
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


def square_context_block(context, target):
    """The block a context was cut from: the context plus the target patches inside its bounding box."""
    rows, cols = {r for r, _ in context}, {c for _, c in context}
    box = {(r, c) for r in range(min(rows), max(rows) + 1) for c in range(min(cols), max(cols) + 1)}
    assert context <= box and box - context <= target, "the context is not one block minus the targets"
    return min(rows), min(cols), max(rows) - min(rows) + 1, max(cols) - min(cols) + 1


@pytest.mark.parametrize("official", [False, True])
def test_context_is_a_square_block_of_the_right_scale_before_targets_are_removed(official):
    g = torch.Generator().manual_seed(1)
    sides, corners = set(), set()
    for _ in range(64):  # one image per call: no truncation to a batch minimum
        # one 1-patch target, so the block around the context is unambiguous
        context, targets = multiblock_masks(1, (10, 10), num_targets=1, target_scale=(0.01, 0.01), min_keep=0,
                                            official_collator=official, generator=g)
        top, left, h, w = square_context_block(as_cells(context[0], (10, 10)), as_cells(targets[0, 0], (10, 10)))
        assert h == w, f"the context block is {h}x{w}, not square"
        sides.add(h)
        corners.add((top, left))
    if official:
        # 0.85-1.0 of 100 patches gives a side of 9 or 10, cut below the grid side to 9; the exclusive
        # randint(0, 10 - 9) can only give 0: the top-left block every time
        assert sides == {9} and corners == {(0, 0)}
    else:
        assert sides == {9, 10} and len(corners) > 1  # side round(sqrt(85..100)); uniform positions


def official_context_sizes(n: int, grid: tuple[int, int], rng: random.Random, min_keep: int = 10) -> list[int]:
    """A naive restatement of facebookresearch/ijepa's MaskCollator (src/masks/multiblock.py) with the
    paper's ViT-H settings: the size of one image's context, `n` times (a fresh batch of one each time)."""
    gh, gw = grid

    def size(scale, ratio, u):
        n_keep = int(gh * gw * (scale[0] + u * (scale[1] - scale[0])))
        r = ratio[0] + u * (ratio[1] - ratio[0])
        h, w = round(math.sqrt(n_keep * r)), round(math.sqrt(n_keep / r))
        while h >= gh:
            h -= 1
        while w >= gw:
            w -= 1
        return h, w

    def place(h, w):
        top, left = rng.randrange(0, gh - h), rng.randrange(0, gw - w)
        return {(r, c) for r in range(top, top + h) for c in range(left, left + w)}

    sizes = []
    for _ in range(n):
        t_size = size((0.15, 0.2), (0.75, 1.5), rng.random())
        c_size = size((0.85, 1.0), (1.0, 1.0), rng.random())
        targets = [place(*t_size) for _ in range(4)]
        assert all(len(t) > min_keep for t in targets)  # else the official loop never ends
        dropped, fails = 0, 0
        while True:
            context = place(*c_size)
            for t in targets[:4 - dropped]:
                context -= t
            if len(context) > min_keep:
                break
            fails += 1
            if fails == 20:
                dropped, fails = dropped + 1, 0
        sizes.append(len(context))
    return sizes


@pytest.mark.parametrize("grid", [(14, 14), (16, 16)])
def test_official_collator_context_sizes_match_a_naive_reference(grid):
    n = 2000
    g = torch.Generator().manual_seed(0)
    ours = [multiblock_masks(1, grid, official_collator=True, generator=g)[0].shape[1] for _ in range(n)]
    reference = official_context_sizes(n, grid, random.Random(0))
    side = grid[0] - 1
    assert max(ours) < side * side and max(reference) < side * side  # never the whole grid, not even (H-1)^2
    assert abs(sum(ours) / n - sum(reference) / n) < 2.0  # ~4 standard errors of the difference

    def cdf(xs, v):
        return sum(x <= v for x in xs) / len(xs)

    # two-sample Kolmogorov-Smirnov distance (critical value at p = 0.001 for 2000 + 2000 draws: 0.062)
    assert max(abs(cdf(ours, v) - cdf(reference, v)) for v in range(grid[0] * grid[1] + 1)) < 0.062


def test_only_the_default_sampler_gives_whole_grid_contexts_on_14x14():
    g = torch.Generator().manual_seed(0)
    blocks = [sample_block_shape((14, 14), (0.85, 1.0), (1.0, 1.0), g) for _ in range(2000)]
    # side 14 once round(sqrt(196 s)) reaches 14, i.e. s >= 0.93: about half of 0.85-1.0
    assert 0.4 < sum(b == (14, 14) for b in blocks) / len(blocks) < 0.55
    shapes = {official_block_shape((14, 14), (0.85, 1.0), (1.0, 1.0), u / 1000) for u in range(1000)}
    assert shapes == {(13, 13)}


def test_official_collator_blocks_on_a_16x16_grid():
    g = torch.Generator().manual_seed(2)
    context, targets = multiblock_masks(32, (16, 16), official_collator=True, generator=g)
    top_left = {(r, c) for r in range(15) for c in range(15)}
    for b in range(32):
        ctx = as_cells(context[b], (16, 16))
        union = set().union(*(as_cells(t, (16, 16)) for t in targets[:, b]))
        for t in targets[:, b]:
            cells = as_cells(t, (16, 16))
            rows, cols = {r for r, _ in cells}, {c for _, c in cells}
            assert cells == {(r, c) for r in rows for c in cols} and len(cells) > 10
        # the context block is the top-left 15x15 holding every target; truncation keeps the lowest indices
        assert union <= top_left and not ctx & union
        full = sorted(r * 16 + c for r, c in top_left - union)
        assert context[b].tolist() == full[:context.shape[1]]


def test_official_collator_refuses_what_would_loop_forever():
    # on a 7x7 grid the official targets are 2x3, 3x3, 4x2 or 4x3 patches: all but 4x3 stay <= min_keep=10
    shapes = {official_block_shape((7, 7), (0.15, 0.2), (0.75, 1.5), u / 1000) for u in range(1001)}
    assert shapes == {(2, 3), (3, 3), (4, 2), (4, 3)}
    with pytest.raises(ValueError, match="target block of 2x3 patches on a 7x7 grid never exceeds min_keep=10"):
        check_official_collator((7, 7), (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), (1.0, 1.0), min_keep=10)
    with pytest.raises(ValueError, match="never exceeds min_keep=10"):  # the draw of this batch
        multiblock_masks(2, (7, 7), official_collator=True, generator=torch.Generator().manual_seed(0))
    check_official_collator((7, 7), (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), (1.0, 1.0), min_keep=5)
    context, _ = multiblock_masks(2, (7, 7), min_keep=4, official_collator=True,
                                  generator=torch.Generator().manual_seed(0))
    assert context.shape[1] > 4


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
