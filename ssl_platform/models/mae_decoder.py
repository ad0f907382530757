"""MAE's pixel decoder, shared by SatMAE++ (`methods/satmae_pp.py`) and M3AE (`methods/m3ae.py`).

He, Chen, Xie, Li, Dollár, Girshick. "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
(facebookresearch/mae, `forward_decoder`). The encoder saw only the visible patches; the decoder sees
every position: the visible tokens, projected to the decoder's width, go back to where they came
from, one learned mask token fills every hidden position, a fixed code says where each token sits,
then ViT blocks and a LayerNorm. The methods' linear heads turn the result into pixels.

The two methods differ only in the code and the token layout: SatMAE++ decodes `G` band groups of
`L` patches at once (position ++ group code, `[G, L, D]`), M3AE puts its fused class token in front
(a zero slot in its position code). `mae_decode` takes both layouts.

The layers stay attributes of each method, under the names their checkpoints use (`decoder_embed`,
`mask_token`, ...), so this module is the maths over them and not an `nn.Module` of its own:
wrapping them in one would rename every checkpoint key and reorder the optimizer's parameters (its
state is matched to them by position on resume).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from timm.models.vision_transformer import Block
from torch import nn


def mae_decoder_blocks(dim: int, depth: int, num_heads: int) -> list[Block]:
    """MAE's decoder blocks: pre-norm timm ViT blocks with MLP ratio 4 and a qkv bias, like the encoder's."""
    return [Block(dim, num_heads, 4.0, qkv_bias=True) for _ in range(depth)]


def fill_masked(visible: torch.Tensor, keep: torch.Tensor, mask_token: torch.Tensor,
                length: int) -> torch.Tensor:
    """Put the visible tokens back at their positions, the mask token everywhere else.

    Args:
        visible: `[B, ..., K, D]` tokens of the visible positions.
        keep: `[B, ..., K]` int64, the position in `[0, length)` of each visible token, distinct per row.
        mask_token: `D` values in any shape (`[1, 1, D]`, `[1, 1, 1, D]`, ...).
        length: L, positions per row.

    Returns:
        `[B, ..., L, D]`: row position `keep[..., k]` holds `visible[..., k, :]`.
    """
    d = visible.shape[-1]
    # under bf16 autocast the projected tokens are bf16 while the mask token parameter stays fp32
    mask = mask_token.to(visible.dtype).reshape(d).expand(*visible.shape[:-2], length, d)
    return mask.scatter(-2, keep[..., None].expand(*keep.shape, d), visible)  # out of place: a new tensor


def mae_decode(
    tokens: torch.Tensor,
    keep: torch.Tensor,
    length: int,
    *,
    embed: nn.Module,
    mask_token: torch.Tensor,
    code: torch.Tensor,
    blocks: Iterable[nn.Module],
    norm: nn.Module,
    num_prefix: int = 0,
) -> torch.Tensor:
    """Decode every position from the visible ones: embed, fill in mask tokens, add the code, blocks, norm.

    Args:
        tokens: `[B, ..., P + K, D_enc]` encoder output: `P = num_prefix` tokens that belong to no
            patch (a class token), then the K visible patches, per row (a row: one band group).
        keep: `[B, ..., K]` int64 positions of the visible patches in `[0, length)`, distinct per row.
        length: L, patches per row.
        embed: projection `D_enc -> D` to the decoder's width.
        mask_token: `D` values in any shape (the methods' checkpoints fix theirs).
        code: fixed code `[..., P + L, D]` that broadcasts against `[B, ..., P + L, D]`: `[G, L, D]`
            position ++ group for SatMAE++, `[1, 1 + L, D]` position with a zero class slot for M3AE.
        blocks: the transformer blocks, run in order on all rows at once.
        norm: the final norm.
        num_prefix: P.

    Returns:
        `[B, ..., P + L, D]` normalised decoder features, prefix first. The prefix has no pixels,
        but the caller drops it after its head, not here: a head over fewer rows sums its weight
        gradient in another order, which changes the last bits of M3AE's training.
    """
    k = tokens.shape[-2] - num_prefix
    if keep.shape != (*tokens.shape[:-2], k) or keep.dtype != torch.int64:
        raise ValueError(f"keep must be int64 [..., K] = {(*tokens.shape[:-2], k)}: the positions of the "
                         f"{k} visible tokens (after {num_prefix} prefix tokens) of tokens "
                         f"{tuple(tokens.shape)}; got {keep.dtype} {tuple(keep.shape)}")
    if code.shape[-2] != num_prefix + length:
        raise ValueError(f"code has {code.shape[-2]} positions, the decoder {num_prefix} prefix + "
                         f"{length} patches")
    x = embed(tokens)  # [B, ..., P + K, D]
    full = fill_masked(x[..., num_prefix:, :], keep, mask_token, length)  # [B, ..., L, D]
    if num_prefix:
        full = torch.cat([x[..., :num_prefix, :], full], dim=-2)  # [B, ..., P + L, D]
    full = full + code.to(full.dtype)
    shape = full.shape
    x = full.flatten(1, -2)  # [B, N, D]: the blocks attend across rows (SatMAE++: across band groups)
    for block in blocks:
        x = block(x)
    return norm(x).view(shape)
