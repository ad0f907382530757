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

timm's model contract (checked for every model we register by `tests/models/test_timm_contract.py`)
holds as for timm's own ViTs: a default cfg (`input_size` 10 x 96 x 96, identity `mean`/`std` since
the datasets scale each band to [0, 1] themselves), `num_classes` / `num_features` /
`head_hidden_size`, `forward_features` (tokens `[B, N, D]`), `forward_head`, `reset_classifier(n,
global_pool)`, `feature_info` (one entry per block), `forward_intermediates`,
`prune_intermediate_layers`, `features_only=True` (timm's getter wrapper over
`forward_intermediates`), gradient checkpointing, TorchScript and torch.fx. Two choices follow from
the band-group tokens:

- an intermediate in "NCHW" format is the G groups' token maps side by side on the channel axis,
  `[B, G * D, h, w]` (channels `g * D ... (g + 1) * D - 1` are group g): a reshape that keeps every
  token, so `feature_info` gives `num_chs = G * D`; "NLC" gives the model's own `[B, G * L, D]`;
- the position code depends on the input's grid, which torch.fx cannot know while tracing, so the
  table is built by `grid_encoding`, which timm's tracer keeps as one call (`register_notrace_function`;
  a plain `torch.fx.symbolic_trace` without timm's list of such functions does not trace this model).

Like timm's ViTs, `forward_features` gives tokens (`output_fmt = "NLC"`), so it meets the token variant
of timm's cfg test (`test_model_default_cfgs_non_std` in timm's `tests/test_models.py`), not the
feature-map one, which timm's own file applies to every name outside its ViT patterns (`vit_*`, ...).
"""

# no `from __future__ import annotations`: torch.fx copies forward()'s annotations into the code of a
# traced model, and TorchScript cannot read them as the strings that import leaves (fx, then script)
import inspect
from collections.abc import Sequence

import torch
from timm.layers import PatchEmbed, trunc_normal_
from timm.models import (
    build_model_with_cfg,
    checkpoint_seq,
    generate_default_cfgs,
    register_model,
    register_notrace_function,
)
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from ssl_platform.models.pos_embed import sincos_1d


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


@register_notrace_function  # traced as one call: its checks branch on the input's shape
def check_images(x: torch.Tensor, in_chans: int, patch_size: int, groups: str) -> torch.Tensor:
    """`x` itself, after checking it is `[B, in_chans, H, W]` with sides divisible by `patch_size`
    (`groups`: the band groups as text, for the message). TorchScript compiles it, messages included."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        shape = ", ".join([str(s) for s in x.shape])
        raise ValueError(f"expected images [B, {in_chans}, H, W] (band groups {groups}), got ({shape}); "
                         "the data's band count must match the model's in_chans")
    h, w = x.shape[-2], x.shape[-1]
    if h % patch_size != 0 or w % patch_size != 0:
        raise ValueError(f"a {h}x{w} image does not split into {patch_size}-px patches; resize or crop it")
    return x


def sincos_2d_table(h: int, w: int, dim: int) -> torch.Tensor:
    """`pos_embed.sincos_2d((h, w), dim)`, bit for bit, in TorchScript-compatible code: `[h * w, dim]` float32.

    Channels: sin(row * f), sin(col * f), cos(row * f), cos(col * f) for dim / 4 frequencies
    f_k = 10000^(-k / (dim / 4)); rows of the table in row-major patch order.
    """
    quarter = dim // 4
    freqs = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.int64).to(torch.float32) / quarter))  # [q]
    rows, cols = torch.meshgrid([torch.arange(h, dtype=torch.int64).to(torch.float32),
                                 torch.arange(w, dtype=torch.int64).to(torch.float32)], indexing="ij")
    coords = torch.stack([rows, cols]).flatten(1).transpose(0, 1)  # [L, 2]: (row, col) of each patch
    angles = coords.unsqueeze(-1) * freqs.unsqueeze(0)  # [L, 2, q]
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=1).flatten(1)  # [L, (sin|cos, row|col, q)]


@register_notrace_function  # traced as one call: the table's size comes from the input's shape
def grid_encoding(h: int, w: int, pos_dim: int, group_code: torch.Tensor) -> torch.Tensor:
    """The fixed encoding `[G, h * w, pos_dim + group_dim]` of the tokens on an `h x w` patch grid: for
    each group, the 2-D sin-cos code of its patch positions (`pos_dim` channels) ++ its 1-D group code
    (`group_code: [G, group_dim]`), on `group_code`'s device and dtype."""
    # built on the CPU in float32, then moved: the same numbers on every device
    pos = sincos_2d_table(h, w, pos_dim).to(device=group_code.device, dtype=group_code.dtype)  # [L, pos_dim]
    g, n = group_code.shape[0], pos.shape[0]
    return torch.cat([pos.expand(g, n, -1), group_code[:, None].expand(g, n, -1)], dim=-1)


class GroupedChannelViT(nn.Module):
    """ViT over band-group tokens, with timm's backbone contract (see the module docstring).

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
        global_pool: "avg" (the average token; there is no class token), or "" for none (then
            `forward_head` keeps every token, and a classifier applies to each).
    """

    output_fmt = "NLC"  # forward_features gives tokens [B, N, D], not a feature map

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
        _check_pool(global_pool)
        self.band_groups = check_band_groups(band_groups, in_chans)
        self.groups_text = str([list(g) for g in self.band_groups])  # for error messages, also in TorchScript
        self.group_dim = embed_dim // 4 if group_dim is None else group_dim
        if (embed_dim - self.group_dim) % 4 or self.group_dim % 2 or not 0 < self.group_dim < embed_dim:
            raise ValueError(f"embed_dim {embed_dim} - group_dim {self.group_dim} must be a positive multiple of 4 "
                             "and group_dim a positive even number (sin-cos codes)")
        self.in_chans, self.patch_size, self.embed_dim = in_chans, patch_size, embed_dim
        self.num_features = self.head_hidden_size = embed_dim
        self.grad_checkpointing = False
        self.patch_embeds = nn.ModuleList(
            PatchEmbed(img_size, patch_size, len(g), embed_dim, strict_img_size=False) for g in self.band_groups
        )
        # the bands in group order, and each group's count: one gather and a split give every group's
        # input (TorchScript cannot index with a Python list per group); fixed, so not in the weights file
        self.register_buffer("band_order", torch.tensor([c for g in self.band_groups for c in g]), persistent=False)
        self.group_sizes = [len(g) for g in self.band_groups]
        self.register_buffer("group_code", sincos_1d(len(self.band_groups), self.group_dim), persistent=False)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=r) for r in rates))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.reset_classifier(num_classes, global_pool)
        # every block sees all tokens at the patch stride; an NCHW intermediate stacks the G groups' maps
        self.feature_info = [{"num_chs": self.num_groups * embed_dim, "reduction": patch_size, "module": f"blocks.{i}"}
                             for i in range(depth)]
        self.apply(_init_weights)
        for embed in self.patch_embeds:  # MAE: the patch projection initialised like a linear layer
            nn.init.xavier_uniform_(embed.proj.weight.view(embed.proj.weight.shape[0], -1))

    @property
    def num_groups(self) -> int:
        return len(self.band_groups)

    def encoding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Fixed token encoding `[G, L, D]` of a patch grid: sin-cos position (D - group_dim) ++ sin-cos group code."""
        return grid_encoding(grid[0], grid[1], self.embed_dim - self.group_dim, self.group_code)

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        """Patch grid `(h, w)` of `x: [B, C, H, W]`, after checking bands and size."""
        x = check_images(x, self.in_chans, self.patch_size, self.groups_text)
        return x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """`x: [B, C, H, W]` -> encoded patch tokens `[B, G, L, D]` (L = H W / p²), before any block."""
        x = check_images(x, self.in_chans, self.patch_size, self.groups_text)
        bands = x.index_select(1, self.band_order).split(self.group_sizes, dim=1)
        embedded = []
        for i, embed in enumerate(self.patch_embeds):
            embedded.append(embed(bands[i]))
        tokens = torch.stack(embedded, dim=1)
        code = grid_encoding(x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size,
                             self.embed_dim - self.group_dim, self.group_code)
        return tokens + code.to(tokens.dtype)  # [B, G, L, D]

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Blocks and final norm on any token sequence `[B, N, D]` (e.g. only the visible ones) -> `[B, N, D]`."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self.norm(checkpoint_seq(self.blocks, tokens))
        return self.norm(self.blocks(tokens))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`x: [B, C, H, W]` -> `[B, G * L, D]`, tokens in group-major order."""
        return self.encode(self.tokens(x).flatten(1, 2))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """`[B, N, D]` -> the average token `[B, D]` (pre_logits) or logits; no pooling: per token."""
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier of `num_classes` outputs (0: none); `global_pool` None keeps the pooling."""
        if global_pool is not None:
            _check_pool(global_pool)
        self.global_pool = getattr(self, "global_pool", "avg") if global_pool is None else global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Nothing: the encodings are fixed buffers, not parameters."""
        return set()

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The tokens after chosen blocks.

        Args:
            x: images `[B, C, H, W]`.
            indices: blocks to return: None all, an int the last n, a list those (negatives count back).
            norm: pass each intermediate through the final norm.
            stop_early: stop after the last block asked for (the returned final features are then
                that block's, normed).
            output_fmt: "NCHW": `[B, G * D, h, w]`, group g's map in channels `g * D ... (g + 1) * D - 1`;
                "NLC": `[B, G * L, D]`, the tokens as `forward_features` orders them.
            intermediates_only: return only the list.

        Returns:
            `(forward_features(x), intermediates)`, or the list alone with `intermediates_only`.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' (group maps on the channel axis) or 'NLC' (tokens), got {output_fmt!r}")
        take, last = feature_take_indices(len(self.blocks), indices)
        h, w = self.grid(x)
        x = self.tokens(x).flatten(1, 2)  # [B, G * L, D]
        intermediates = []
        for i, block in enumerate(self.blocks[:last + 1] if stop_early else self.blocks):
            x = checkpoint(block, x, use_reentrant=False) if self.grad_checkpointing else block(x)
            if i in take:
                intermediates.append(self.norm(x) if norm else x)
        if output_fmt == "NCHW":  # [B, G * L, D] -> [B, G, h, w, D] -> [B, G, D, h, w] -> [B, G * D, h, w]
            b, d = x.shape[0], x.shape[-1]
            intermediates = [y.reshape(b, self.num_groups, h, w, d).permute(0, 1, 4, 2, 3).reshape(b, -1, h, w)
                             for y in intermediates]
        return intermediates if intermediates_only else (self.norm(x), intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last of `indices`, the final norm if `prune_norm`, the classifier
        (and pooling) if `prune_head`; returns the kept indices."""
        take, last = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


def _check_pool(global_pool: str) -> None:
    if global_pool not in ("avg", ""):
        raise ValueError(f"GroupedChannelViT pools by averaging its tokens ('avg', there is no class token) or "
                         f"not at all (''); got global_pool={global_pool!r}")


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# SatMAE's Sentinel-2 grouping of the 10 kept bands (B2 B3 B4 B5 B6 B7 B8 B8A B11 B12)
SENTINEL2_GROUPS = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))


def _cfg(groups: int) -> dict:
    # no hosted weights: our own trained files load with pretrained_cfg_overlay=dict(file=...). The datasets
    # scale every band to [0, 1] themselves (SatMAE's mean +- 2 sigma clip), so the model's own mean/std are identity.
    return {"num_classes": 0, "input_size": (10, 96, 96), "pool_size": None, "crop_pct": 1.0, "interpolation": "bilinear",
            "mean": (0.0,) * 10, "std": (1.0,) * 10, "classifier": "head",
            "first_conv": tuple(f"patch_embeds.{g}.proj" for g in range(groups)), "license": "apache-2.0"}


default_cfgs = generate_default_cfgs({
    "grouped_vit.untrained": _cfg(groups=1),  # band_groups=None: one group of all bands
    "grouped_vit_base_patch8_96.untrained": _cfg(groups=len(SENTINEL2_GROUPS)),
    "grouped_vit_large_patch8_96.untrained": _cfg(groups=len(SENTINEL2_GROUPS)),
})
_DEFAULT_DEPTH = inspect.signature(GroupedChannelViT).parameters["depth"].default


def _create(variant: str, pretrained: bool, defaults: dict, kwargs: dict) -> GroupedChannelViT:
    kwargs = {**defaults, **kwargs}
    # features_only: timm's getter over forward_intermediates, by default the last 3 blocks (as timm's ViTs)
    feature_cfg = {"feature_cls": "getter", "out_indices": min(3, kwargs.get("depth", _DEFAULT_DEPTH))}
    return build_model_with_cfg(GroupedChannelViT, variant, pretrained, feature_cfg=feature_cfg, **kwargs)


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
