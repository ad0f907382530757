"""The group-channel ViT of SatMAE / SatMAE++: one patch embedding per group of spectral bands.

Cong, Khanna, Meng, Liu, Rozi, He, Burke, Lobell, Ermon. "SatMAE: Pre-training Transformers for
Temporal and Multi-Spectral Satellite Imagery", NeurIPS 2022; Noman, Naseer, Cholakkal, Anwer, Khan,
Khan. "Rethinking Transformers Pre-training for Multi-Spectral Satellite Imagery", CVPR 2024.

Each band group (e.g. Sentinel-2's 10 m visible + NIR, 20 m red edge, 20 m SWIR) is cut into its own
patches by its own `PatchEmbed`, so an image of G groups on an h x w grid gives G * h * w tokens.
Every token gets a fixed encoding: a 2-D sin-cos position code concatenated with a 1-D sin-cos code
of its group (neither is trained). The encoder is a stack of timm ViT `Block`s; the representation
is the average token.

Registered with timm (`grouped_vit`, `grouped_vit_base_patch8_96`, `grouped_vit_large_patch8_96`), so
`create_backbone("grouped_vit", band_groups=..., ...)` and `timm.create_model` build it by name once
this module is imported. Images of any size divisible by the patch size are accepted (the position
code is computed for the grid at hand), so a backbone pretrained at one size embeds another.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import PatchEmbed, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import Block
from torch import nn

from ssl_platform.models.pos_embed import sincos_1d, sincos_2d


def check_band_groups(band_groups: Sequence[Sequence[int]] | None, in_chans: int) -> tuple[tuple[int, ...], ...]:
    """`band_groups` as tuples, checked to cover channels 0..in_chans-1 exactly once (None: one group of all)."""
    if band_groups is None:
        return (tuple(range(in_chans)),)
    groups = tuple(tuple(int(c) for c in g) for g in band_groups)
    flat = sorted(c for g in groups for c in g)
    if not groups or any(not g for g in groups) or flat != list(range(in_chans)):
        raise ValueError(
            f"band_groups {[list(g) for g in groups]} must split the {in_chans} input channels 0..{in_chans - 1} "
            "into non-empty groups, each channel in exactly one group; the image has "
            f"{in_chans} bands, so fix in_chans or the groups (e.g. sentinel2: [[0,1,2,6],[3,4,5,7],[8,9]])"
        )
    return groups


class GroupedChannelViT(nn.Module):
    """ViT over band-group tokens, with timm's backbone contract.

    Args:
        img_size: the side the model is built for (patch grid of `img_size / patch_size`); other
            sides divisible by `patch_size` work too.
        patch_size: patch side in pixels (SatMAE: 8 at 96 px).
        in_chans: input bands.
        band_groups: channel indices of each group (None: one group of all bands, SatMAE++'s RGB mode).
        embed_dim: token width D.
        group_dim: width of the group code inside the encoding (None: D / 4, the paper's 256 of 1024);
            the position code takes the other `D - group_dim` channels.
        depth, num_heads, mlp_ratio, drop_path_rate: the transformer blocks.
        num_classes: a linear classifier on the pooled token (0: none).
        global_pool: "avg" (the only pooling; there is no class token).
    """

    def __init__(
        self,
        img_size: int = 96,
        patch_size: int = 8,
        in_chans: int = 10,
        band_groups: Sequence[Sequence[int]] | None = None,
        embed_dim: int = 768,
        group_dim: int | None = None,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        num_classes: int = 0,
        global_pool: str = "avg",
    ):
        super().__init__()
        if global_pool != "avg":
            raise ValueError(f"GroupedChannelViT pools by averaging its tokens; global_pool must be 'avg', got {global_pool!r}")
        self.band_groups = check_band_groups(band_groups, in_chans)
        self.group_dim = embed_dim // 4 if group_dim is None else group_dim
        if (embed_dim - self.group_dim) % 4 or self.group_dim % 2 or not 0 < self.group_dim < embed_dim:
            raise ValueError(f"embed_dim {embed_dim} - group_dim {self.group_dim} must be a positive multiple of 4 "
                             "and group_dim a positive even number (sin-cos codes)")
        self.in_chans, self.patch_size, self.embed_dim = in_chans, patch_size, embed_dim
        self.num_features = self.head_hidden_size = embed_dim
        self.patch_embeds = nn.ModuleList(
            PatchEmbed(img_size, patch_size, len(g), embed_dim, strict_img_size=False) for g in self.band_groups
        )
        # fixed, so rebuilt from the kwargs rather than stored in the weights file
        self.register_buffer("group_code", sincos_1d(len(self.band_groups), self.group_dim), persistent=False)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=r) for r in rates))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        self.apply(_init_weights)
        for embed in self.patch_embeds:  # MAE: the patch projection initialised like a linear layer
            nn.init.xavier_uniform_(embed.proj.weight.view(embed.proj.weight.shape[0], -1))

    @property
    def num_groups(self) -> int:
        return len(self.band_groups)

    def encoding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Fixed token encoding `[G, L, D]`: sin-cos position (D - group_dim) ++ sin-cos group code (group_dim)."""
        pos = sincos_2d(grid, self.embed_dim - self.group_dim).to(self.group_code)  # [L, D - g]
        g, n = self.num_groups, pos.shape[0]
        return torch.cat([pos.expand(g, n, -1), self.group_code[:, None].expand(g, n, -1)], dim=-1)

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        """Patch grid `(h, w)` of `x: [B, C, H, W]`, after checking bands and size."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images [B, {self.in_chans}, H, W] (band groups {[list(g) for g in self.band_groups]}), "
                             f"got {tuple(x.shape)}; the data's band count must match the model's in_chans")
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"a {h}x{w} image does not split into {self.patch_size}-px patches; resize or crop it")
        return h // self.patch_size, w // self.patch_size

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """`x: [B, C, H, W]` -> encoded patch tokens `[B, G, L, D]` (L = H W / p²), before any block."""
        grid = self.grid(x)
        tokens = torch.stack([embed(x[:, list(g)]) for embed, g in zip(self.patch_embeds, self.band_groups)], dim=1)
        return tokens + self.encoding(grid).to(tokens.dtype)  # [B, G, L, D]

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Blocks and final norm on any token sequence `[B, N, D]` (e.g. only the visible ones) -> `[B, N, D]`."""
        return self.norm(self.blocks(tokens))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`x: [B, C, H, W]` -> `[B, G * L, D]`, tokens in group-major order."""
        return self.encode(self.tokens(x).flatten(1, 2))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """`[B, N, D]` -> the average token `[B, D]` (pre_logits) or logits."""
        x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def no_weight_decay(self) -> set[str]:
        """Nothing: the encodings are fixed buffers, not parameters."""
        return set()


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


_UNTRAINED = {"num_classes": 0, "input_size": None, "pool_size": None, "mean": None, "std": None,
              "classifier": "head", "first_conv": None, "license": "apache-2.0"}
# no hosted weights: our own trained files load with pretrained_cfg_overlay=dict(file=...)
default_cfgs = generate_default_cfgs({f"{n}.untrained": dict(_UNTRAINED) for n in (
    "grouped_vit", "grouped_vit_base_patch8_96", "grouped_vit_large_patch8_96")})
# SatMAE's Sentinel-2 grouping of the 10 kept bands (B2 B3 B4 B5 B6 B7 B8 B8A B11 B12)
SENTINEL2_GROUPS = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))


def _create(variant: str, pretrained: bool, defaults: dict, kwargs: dict) -> GroupedChannelViT:
    return build_model_with_cfg(GroupedChannelViT, variant, pretrained, feature_cfg={"flatten_sequential": False},
                                **{**defaults, **kwargs})


@register_model
def grouped_vit(pretrained: bool = False, **kwargs) -> GroupedChannelViT:
    """Every size from kwargs (`band_groups`, `embed_dim`, `depth`, ...); defaults are ViT-B at 96 px, patch 8."""
    return _create("grouped_vit", pretrained, {}, kwargs)


@register_model
def grouped_vit_base_patch8_96(pretrained: bool = False, **kwargs) -> GroupedChannelViT:
    """ViT-B (768, 12 blocks, 12 heads) on Sentinel-2's 10 bands in SatMAE's 3 groups."""
    defaults = {"in_chans": 10, "band_groups": SENTINEL2_GROUPS, "embed_dim": 768, "depth": 12, "num_heads": 12}
    return _create("grouped_vit_base_patch8_96", pretrained, defaults, kwargs)


@register_model
def grouped_vit_large_patch8_96(pretrained: bool = False, **kwargs) -> GroupedChannelViT:
    """ViT-L (1024 = 768 position + 256 group, 24 blocks, 16 heads): SatMAE++'s Sentinel-2 encoder."""
    defaults = {"in_chans": 10, "band_groups": SENTINEL2_GROUPS, "embed_dim": 1024, "depth": 24, "num_heads": 16}
    return _create("grouped_vit_large_patch8_96", pretrained, defaults, kwargs)
