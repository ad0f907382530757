"""Uniform random masks with an exact count per sample (SparK, and the MAE family).

Pure functions: randomness comes from the `generator` argument (None: torch's global RNG, which the
engine checkpoints, so a resumed run draws the same masks).
"""

from __future__ import annotations

import torch


def num_visible(num_cells: int, mask_ratio: float) -> int:
    """Cells kept visible: `round(num_cells * (1 - mask_ratio))` (SparK: 20 of 49 at ratio 0.6).

    Raises ValueError unless at least one cell is visible and at least one is masked: a mask that
    hides nothing or everything gives a loss of 0/0.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    keep = round(num_cells * (1.0 - mask_ratio))
    if not 0 < keep < num_cells:
        raise ValueError(
            f"mask_ratio {mask_ratio} on a grid of {num_cells} cells keeps {keep} visible; at least one cell must "
            "be visible and one masked. Use larger images (a finer mask grid) or another mask_ratio."
        )
    return keep


def random_keep_mask(
    batch_size: int,
    num_cells: int,
    num_keep: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """`[batch_size, num_cells]` bool, True = visible, exactly `num_keep` True per row.

    Each row is an independent uniformly random subset (the first `num_keep` of a random permutation,
    drawn as the argsort of uniform noise as in MAE).
    """
    if not 0 <= num_keep <= num_cells:
        raise ValueError(f"num_keep must be in [0, {num_cells}], got {num_keep}")
    noise = torch.rand(batch_size, num_cells, generator=generator, device=device if generator is None else generator.device)
    keep = noise.argsort(dim=1)[:, :num_keep]
    mask = torch.zeros(batch_size, num_cells, dtype=torch.bool, device=noise.device)
    mask.scatter_(1, keep, True)
    return mask.to(device) if device is not None else mask
