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


def column_subsets(
    batch_size: int,
    num_columns: int,
    *,
    num_targets: int = 4,
    context_fraction: tuple[float, float] = (0.136, 0.368),
    target_fraction: tuple[float, float] = (0.156, 0.622),
    max_tries: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """T-JEPA's masks over the columns of a table row.

    Once per batch, the context size `n_c` and the target size `n_t` are drawn uniformly from
    `round(D * fraction)` ranges (the defaults are the official code's Jannis values) until
    `n_c + n_t <= D`; per row, a uniformly random context of `n_c` columns, then `num_targets`
    random subsets of `n_t` columns of the rest (disjoint from the context, possibly overlapping each
    other).

    Returns:
        context: `[B, n_c]` int64 column indices, sorted.
        targets: `[num_targets, B, n_t]` int64 column indices, each set sorted.
    """
    if num_columns < 2:
        raise ValueError(f"T-JEPA needs at least 2 columns (one context, one target), got {num_columns}")

    def size(fraction: tuple[float, float]) -> int:
        low, high = (max(1, round(num_columns * f)) for f in fraction)
        return int(torch.randint(low, max(low, high) + 1, (), generator=generator))

    for _ in range(max_tries):
        n_c, n_t = size(context_fraction), size(target_fraction)
        if n_c + n_t <= num_columns:
            break
    else:
        raise ValueError(
            f"context_fraction {tuple(context_fraction)} and target_fraction {tuple(target_fraction)} leave no room for "
            f"disjoint context and target sets on {num_columns} columns; lower them"
        )
    order = torch.rand(batch_size, num_columns, generator=generator).argsort(dim=1)
    context, rest = order[:, :n_c], order[:, n_c:]
    picks = torch.rand(num_targets, batch_size, rest.shape[1], generator=generator).argsort(dim=2)[..., :n_t]
    targets = torch.gather(rest.expand(num_targets, -1, -1), 2, picks)
    return context.sort(dim=1).values, targets.sort(dim=2).values
