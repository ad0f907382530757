"""Fixed sine-cosine position embeddings (I-JEPA's encoder and predictor, T-JEPA's predictor).

The 2-D table is timm's (`build_sincos2d_pos_embed`: half the channels encode the row, half the
column); the 1-D one is the Transformer's original table, for sequences of table columns.
"""

from __future__ import annotations

import torch
from timm.layers import build_sincos2d_pos_embed


def sincos_2d(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """`[grid_h * grid_w, dim]` table, rows in row-major patch order; `dim` must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    return build_sincos2d_pos_embed(list(grid), dim=dim)


def sincos_1d(length: int, dim: int) -> torch.Tensor:
    """`[length, dim]` table: `sin(p / 10000^(2i/dim))` in the first half of the channels, `cos` in the second."""
    if dim % 2:
        raise ValueError(f"a 1-D sin-cos position embedding needs an even width, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()
