"""The JEPA predictor: a narrow transformer that fills in the representations of target tokens.

Shared by I-JEPA (targets are image blocks, positions from a 2-D sin-cos table) and T-JEPA (targets
are table columns, a 1-D table). The predictor sees the context tokens, projected to its own width
and tagged with their positions, followed by one shared mask token per target position, tagged the
same way; it returns its outputs at the mask tokens, projected back to the encoder's width.
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from ssl_platform.masking.block import gather_tokens


class MaskedTokenPredictor(nn.Module):
    """Predict encoder tokens at target positions from context tokens.

    Args:
        pos_embed: `[N, dim]` fixed position table over every position a token can hold.
        embed_dim: the encoder's width D.
        depth: transformer blocks (pre-norm timm `Block`s).
        num_heads: attention heads; `dim` (the table's width) must be divisible by it.
    """

    def __init__(self, pos_embed: torch.Tensor, embed_dim: int, depth: int = 6, num_heads: int = 12):
        super().__init__()
        dim = pos_embed.shape[1]
        if dim % num_heads:
            raise ValueError(f"predictor width {dim} is not divisible by its {num_heads} heads")
        self.proj_in = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", pos_embed[None].clone(), persistent=False)  # [1, N, dim]
        self.blocks = nn.Sequential(*(Block(dim, num_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=nn.LayerNorm)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj_out = nn.Linear(dim, embed_dim)
        self.apply(_init_weights)
        trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor) -> torch.Tensor:
        """`context: [B, Nc, D]` tokens at positions `context_idx: [B, Nc]`; `target_idx: [M, B, Nt]`
        -> predictions `[M * B, Nt, D]`, block-major (target set m of sample b at row `m * B + b`).

        Each target set gets its own pass (the context repeated once per set), so target sets never
        attend to each other, as in both papers.
        """
        m, b, nt = target_idx.shape
        pos = self.pos_embed.expand(b, -1, -1)
        x = self.proj_in(context) + gather_tokens(pos, context_idx)  # [B, Nc, d]
        x = x.repeat(m, 1, 1)  # [M*B, Nc, d], block-major like the queries below
        queries = self.mask_token + gather_tokens(pos.repeat(m, 1, 1), target_idx.flatten(0, 1))  # [M*B, Nt, d]
        x = self.blocks(torch.cat([x, queries], dim=1))
        return self.proj_out(self.norm(x[:, -nt:]))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
