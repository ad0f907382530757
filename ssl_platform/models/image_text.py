"""An image tower for image-text models and the co-attention that fuses its tokens with a text's.

M3AE (`methods/m3ae.py`; Chen et al., MICCAI 2022) encodes the image with a timm ViT whose class
token is the image embedding (`class_token_vit`, `vit_tokens`) and the text with `models.text`'s
Transformer, then lets the two streams attend to each other, layer by layer (`CoAttentionLayer`,
`co_attend`): each layer is self-attention, cross-attention to the other stream, MLP (pre-norm).
"""

from __future__ import annotations

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from ssl_platform.models.backbones import create_backbone


def class_token_vit(name: str, in_chans: int, image_size: int, backbone_kwargs: dict | None) -> VisionTransformer:
    """A timm ViT with one class token and no register tokens, for `image_size` images.

    Raises:
        ValueError: `name` (with `backbone_kwargs`) is not such a ViT; says to use a vit_* name.
    """
    not_a_vit = (f"an image tower needs a timm VisionTransformer with a class token and no register tokens; "
                 f"{name!r} with {backbone_kwargs} is not one (use a vit_* name)")
    try:
        encoder = create_backbone(name, in_chans=in_chans, img_size=image_size, **(backbone_kwargs or {}))
    except TypeError as err:  # a non-ViT timm model refuses img_size
        raise ValueError(not_a_vit) from err
    if not isinstance(encoder, VisionTransformer) or encoder.num_prefix_tokens != 1 or encoder.cls_token is None:
        raise ValueError(not_a_vit)
    return encoder


def vit_tokens(encoder: VisionTransformer, x: Tensor, keep: Tensor | None = None) -> Tensor:
    """`x: [B, C, H, W]` -> `[B, 1 + N, D]` ViT tokens, or `[B, 1 + K, D]` of the patches `keep: [B, K]`.

    Positions are added before the gather (each kept patch knows where it came from); the class
    token is always kept.
    """
    if x.shape[-2:] != encoder.patch_embed.img_size:
        raise ValueError(f"the image tower was built for {tuple(encoder.patch_embed.img_size)} images, got "
                         f"{tuple(x.shape[-2:])}; set method.image_size to the transform's size")
    tokens = encoder._pos_embed(encoder.patch_embed(x))  # [B, 1 + N, D]
    if keep is not None:
        patches = torch.gather(tokens[:, 1:], 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        tokens = torch.cat([tokens[:, :1], patches], dim=1)
    return encoder.norm(encoder.blocks(encoder.norm_pre(tokens)))


class CoAttentionLayer(nn.Module):
    """One stream's fusion layer: self-attention, cross-attention to the other stream, MLP (pre-norm).

    `forward(x [B, N, D], other [B, M, D], x_pad [B, N] | None, other_pad [B, M] | None) -> [B, N, D]`;
    `*_pad` is True at padding, which no token attends to.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.norm_other = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, other: Tensor, x_pad: Tensor | None, other_pad: Tensor | None) -> Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, key_padding_mask=x_pad, need_weights=False)[0]
        o = self.norm_other(other)
        x = x + self.cross_attn(self.norm2(x), o, o, key_padding_mask=other_pad, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


def co_attend(image_layers: nn.ModuleList, text_layers: nn.ModuleList, x: Tensor, t: Tensor, text_pad: Tensor,
              depth: int, keep_after: int) -> tuple[Tensor, Tensor, Tensor]:
    """`depth` co-attention layers over the image stream `x: [B, Ni, F]` and the text stream `t: [B, L, F]`.

    Both streams update from the other's state *before* each layer (the official co-attention). The
    image stream stops at its last layer when `image_layers` is shorter than `depth` (a layer only the
    text stream has); `text_pad: [B, L]` is True at padding.

    Returns:
        the image stream and the text stream after `depth` layers, and the image stream after
        `keep_after` layers (the input itself for 0).
    """
    kept = x
    for i in range(depth):
        new_x = image_layers[i](x, t, None, text_pad) if i < len(image_layers) else x
        t = text_layers[i](t, x, text_pad, None)
        x = new_x
        if i + 1 == keep_after:
            kept = x
    return x, t, kept
