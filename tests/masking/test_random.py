"""Exact-count random masks (masking/random.py)."""

import pytest
import torch

from ssl_platform.masking.random import num_visible, random_keep_mask


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
