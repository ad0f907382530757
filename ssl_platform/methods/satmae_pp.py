"""SatMAE++: masked autoencoding of multispectral imagery with multi-scale reconstruction.

Noman, Naseer, Cholakkal, Anwer, Khan, Khan. "Rethinking Transformers Pre-training for Multi-Spectral
Satellite Imagery", CVPR 2024 (techmn/satmae_pp), on top of Cong et al. "SatMAE", NeurIPS 2022.

The batch image is the finest scale; one bilinear halving per upsampling level gives the encoder's
input (Sentinel-2, two levels: 384 -> 192 -> 96 px). The group-channel ViT (`models/grouped_vit.py`) turns it
into one token per band group and patch; 75% of each group's patches are hidden, drawn
independently per group, and the encoder sees only the rest. An MAE decoder fills in mask tokens
and predicts every patch's pixels, group by group. The loss is

    0.6 * MSE(predicted, true pixels of the hidden patches) + 0.4 * mean_k L1(up_k(prediction), image at 2^k x)

where `up_k` are convolutional upsampling blocks applied to the whole predicted image (visible
patches included) and the L1 covers every pixel of each finer scale. RGB mode: one group, one
upsampling level (0.6 MSE + 0.4 L1 at 2x). Evaluation reads the encoder, average-pooled.

The decoder is MAE's (`models/mae_decoder.py`, shared with M3AE) over all groups' tokens at once,
with a fixed position ++ group code like the encoder's, and one linear head per band group.

Deviations from the official code (techmn/satmae_pp@ee173bf; docs/methods.md, SatMAE++ section):
- Head/band pairing. Each group's head is scored on its own group's bands (the paper's intent). The
  official code concatenates the heads' outputs in group order (for Sentinel-2: bands 0 1 2 6 | 3 4 5
  7 | 8 9) and then reads the result as band order, in the MSE and in the multi-scale branch: head 0
  is scored on bands 0-3, head 1 on 4-7 (the red-edge group's head on B6, B7, B8, B8A), and each
  band's error counts under the mask of the group the band belongs to. `official_head_order: true`
  reproduces that pairing; the recipes keep ours. Identical when the groups are in band order.
- No class token (the official encoder has one, and the decoder an extra slot for it).
- Every group hides exactly the same number of patches (officially 75% of all G x L tokens jointly,
  so per-group counts vary; the total is the same).
- The mask token is exempt from weight decay (officially decayed: a 3-D parameter).
- Band statistics are computed from the data (`band_stats.json`), not SatMAE's fixed constants.
"""

from __future__ import annotations

import timm.layers
import torch
import torch.nn.functional as F
from torch import nn

from ssl_platform.losses.reconstruction import masked_patch_mse, patchify, unpatchify
from ssl_platform.masking.random import num_visible, random_keep_mask
from ssl_platform.methods.base import Method, build_backbone
from ssl_platform.models import grouped_vit  # noqa: F401  (registers grouped_vit* with timm)
from ssl_platform.models.grouped_vit import GroupedChannelViT
from ssl_platform.models.mae_decoder import mae_decode, mae_decoder_blocks
from ssl_platform.models.pos_embed import sincos_1d, sincos_2d


class UpBlock(nn.Module):
    """SatMAE++'s upsampling block: `[B, d, h, w]` -> (features `[B, d, 2h, 2w]`, image `[B, C, 2h, 2w]`).

    Transposed conv (k4 s2 p1), LayerNorm, LeakyReLU, then a residual block whose branch is scaled
    by 0.5 (conv3x3, ReLU, conv3x3), LayerNorm; a 3x3 conv projects the features to the C bands.
    """

    def __init__(self, dim: int, out_chans: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(dim, dim, kernel_size=4, stride=2, padding=1)
        self.norm1, self.norm2 = timm.layers.LayerNorm2d(dim), timm.layers.LayerNorm2d(dim)
        self.residual = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(), nn.Conv2d(dim, dim, 3, padding=1))
        self.to_image = nn.Conv2d(dim, out_chans, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.leaky_relu(self.norm1(self.up(x)))
        x = self.norm2(x + 0.5 * self.residual(x))
        return x, self.to_image(x)


class SatMAEPP(Method):
    """SatMAE++ with a group-channel ViT encoder.

    Batch keys: `image`: `[B, C, S, S]`, bands scaled to [0, 1] (`data/datasets/multispectral.py`),
    S = `image_size`, the finest scale; the encoder sees `S / 2^num_scales`.

    Args:
        backbone: a `grouped_vit*` name or a `GroupedChannelViT`.
        in_chans: bands of the image.
        image_size: side S of the batch images (the paper: 384; CPU recipes: 64).
        backbone_kwargs: more kwargs of the backbone (`band_groups`, `patch_size`, `embed_dim`, `depth`,
            `num_heads`, `group_dim`); `img_size` is set here to `S / 2^num_scales`.
        mask_ratio: fraction of each group's patches hidden (the paper: 0.75).
        spatial_mask: hide the same patches in every group (SatMAE's `--spatial_mask` ablation).
        num_scales: upsampling levels (the paper: 2 multispectral, 1 RGB).
        decoder_dim, decoder_depth, decoder_heads: the MAE decoder (the paper: 512, 8, 16).
        decoder_group_dim: width of the decoder's group code (None: decoder_dim / 4; the paper 128 of 512).
        upsample_dim: channels of the upsampling blocks (None: 4 C, after the 1x1 conv C -> 4C).
        norm_pix_loss: per-patch normalised MSE targets (the paper: off; the L1 terms stay in pixel units).
        mse_weight, ms_weight: the weights of the two terms (the paper: 0.6, 0.4).
        official_head_order: pair the heads' outputs with the bands as the official code does (in
            concatenation order; module docstring) instead of each head with its own group's bands.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "grouped_vit_large_patch8_96",
        in_chans: int = 10,
        image_size: int = 384,
        backbone_kwargs: dict | None = None,
        mask_ratio: float = 0.75,
        spatial_mask: bool = False,
        num_scales: int = 2,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        decoder_group_dim: int | None = None,
        upsample_dim: int | None = None,
        norm_pix_loss: bool = False,
        mse_weight: float = 0.6,
        ms_weight: float = 0.4,
        official_head_order: bool = False,
    ):
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be at least 1 (SatMAE++ reconstructs at 2x and up), got {num_scales}")
        if image_size % 2 ** num_scales:
            raise ValueError(f"image_size {image_size} cannot be halved {num_scales} times; use a multiple of "
                             f"{2 ** num_scales}")
        self.input_size = image_size // 2 ** num_scales
        self.backbone = build_backbone(backbone, False, in_chans, {"img_size": self.input_size, **(backbone_kwargs or {})})
        if not isinstance(self.backbone, GroupedChannelViT):
            raise TypeError(f"SatMAE++ needs a GroupedChannelViT (a grouped_vit* name); got {type(self.backbone).__name__}")
        encoder = self.backbone
        if self.input_size % encoder.patch_size:
            raise ValueError(f"the encoder input image_size / 2^num_scales = {self.input_size} px is not a multiple of "
                             f"patch_size {encoder.patch_size}; use image_size = a multiple of "
                             f"{encoder.patch_size * 2 ** num_scales}")
        self.grid = (self.input_size // encoder.patch_size,) * 2
        self.num_patches = self.grid[0] * self.grid[1]
        self.num_keep = num_visible(self.num_patches, mask_ratio)  # fails early on a grid too coarse
        self.in_chans, self.num_scales, self.spatial_mask = in_chans, num_scales, spatial_mask
        self.norm_pix_loss, self.mse_weight, self.ms_weight = norm_pix_loss, mse_weight, ms_weight
        self.official_head_order = official_head_order

        groups = encoder.band_groups
        group_dim = decoder_dim // 4 if decoder_group_dim is None else decoder_group_dim
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        # fixed decoder encoding, like the encoder's: position ++ group code; [G, L, decoder_dim]
        pos = sincos_2d(self.grid, decoder_dim - group_dim)
        code = sincos_1d(len(groups), group_dim)
        self.register_buffer("decoder_code", torch.cat([pos.expand(len(groups), -1, -1),
                                                        code[:, None].expand(-1, len(pos), -1)], dim=-1), persistent=False)
        self.decoder = nn.Sequential(*mae_decoder_blocks(decoder_dim, decoder_depth, decoder_heads))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        p2 = encoder.patch_size ** 2
        self.heads = nn.ModuleList(nn.Linear(decoder_dim, len(g) * p2) for g in groups)  # per group |g| p² pixels
        # channel order of the groups concatenated -> original band order
        self.register_buffer("band_order", torch.tensor([c for g in groups for c in g]).argsort(), persistent=False)

        width = upsample_dim or 4 * in_chans
        self.upsample_stem = nn.Sequential(nn.Conv2d(in_chans, width, 1), nn.GELU(), timm.layers.LayerNorm2d(width))
        self.upsample = nn.ModuleList(UpBlock(width, in_chans) for _ in range(num_scales))

    def no_weight_decay(self) -> set[str]:
        """The mask token is an embedding, not a weight."""
        return {"mask_token"}

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """`x: [B, C, S, S]` -> `[encoder input (S / 2^n), ..., S / 2, S]`, by repeated bilinear halving."""
        if x.shape[1:] != (self.in_chans, self.input_size * 2 ** self.num_scales, self.input_size * 2 ** self.num_scales):
            raise ValueError(f"SatMAE++ was built for images [B, {self.in_chans}, {self.input_size * 2 ** self.num_scales}, "
                             f"{self.input_size * 2 ** self.num_scales}], got {tuple(x.shape)}; set method.image_size / "
                             "in_chans to the data's (tile_size, bands)")
        scales = [x]
        for _ in range(self.num_scales):
            scales.insert(0, F.interpolate(scales[0], scale_factor=0.5, mode="bilinear", align_corners=False))
        return scales

    def sample_keep(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """`[B, G, L]` bool, True = visible: exactly `num_keep` per group, drawn independently per group
        (or the same draw for every group with `spatial_mask`)."""
        groups = self.backbone.num_groups
        if self.spatial_mask:
            keep = random_keep_mask(batch_size, self.num_patches, self.num_keep, device=device)
            return keep[:, None].expand(-1, groups, -1)
        keep = random_keep_mask(batch_size * groups, self.num_patches, self.num_keep, device=device)
        return keep.view(batch_size, groups, self.num_patches)

    def predict(self, tokens: torch.Tensor, keep: torch.Tensor) -> list[torch.Tensor]:
        """Encode the visible tokens, decode every position.

        Args:
            tokens: `[B, G, L, D]` encoded patch tokens (`GroupedChannelViT.tokens`).
            keep: `[B, G, L]` bool, exactly `num_keep` True per group.

        Returns:
            per group g, `[B, L, |g| p²]` predicted pixels in `patchify`'s (p, p, c) order.
        """
        b, g, n, d = tokens.shape
        # the kept positions of each group, ascending: stable sort puts the True (1) entries first
        ids = keep.to(torch.uint8).sort(dim=-1, descending=True, stable=True).indices[..., :self.num_keep]  # [B, G, K]
        visible = torch.gather(tokens, 2, ids[..., None].expand(-1, -1, -1, d))  # [B, G, K, D]
        latent = self.backbone.encode(visible.flatten(1, 2)).view(b, g, self.num_keep, d)  # [B, G, K, D]
        full = mae_decode(latent, ids, n, embed=self.decoder_embed, mask_token=self.mask_token,
                          code=self.decoder_code, blocks=self.decoder, norm=self.decoder_norm)  # [B, G, L, Dd]
        return [head(full[:, i]) for i, head in enumerate(self.heads)]

    def to_image(self, preds: list[torch.Tensor]) -> torch.Tensor:
        """Per-group patch predictions -> the whole predicted image `[B, C, s, s]` in band order (with
        `official_head_order`: the heads' channels concatenated in group order, read as band order)."""
        p = self.backbone.patch_size
        parts = [unpatchify(pred, p, self.grid, len(g)) for pred, g in zip(preds, self.backbone.band_groups)]
        image = torch.cat(parts, dim=1)
        return image if self.official_head_order else image[:, self.band_order]

    def losses(self, scales: list[torch.Tensor], preds: list[torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss terms from the image pyramid, the per-group predictions and the visibility mask.

        MSE: per (group, patch) mean over its |g| p² values, averaged over the hidden (group, patch)
        pairs; every group hides the same number, so this is the mean of the groups' masked MSEs.
        L1: the upsampled whole prediction against each finer scale, over all pixels.
        """
        p, groups = self.backbone.patch_size, self.backbone.band_groups
        image = self.to_image(preds)
        if self.official_head_order:  # group g's bands are scored on the predicted channels at those indices
            preds = [patchify(image[:, list(g)], p) for g in groups]
        mse = torch.stack([
            masked_patch_mse(pred, patchify(scales[0][:, list(g)], p), ~keep[:, i], norm_pix=self.norm_pix_loss)
            for i, (pred, g) in enumerate(zip(preds, groups))
        ]).mean()
        feats = self.upsample_stem(image)
        out = {"mse": mse}
        for k, block in enumerate(self.upsample, start=1):
            feats, image = block(feats)
            out[f"l1_{2 ** k}x"] = F.l1_loss(image.float(), scales[k].float())
        out["l1"] = torch.stack([out[f"l1_{2 ** k}x"] for k in range(1, self.num_scales + 1)]).mean()
        out["loss"] = self.mse_weight * mse + self.ms_weight * out["l1"]
        return out

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        scales = self.pyramid(batch["image"])
        keep = self.sample_keep(scales[0].shape[0], scales[0].device)
        preds = self.predict(self.backbone.tokens(scales[0]), keep)
        return self.losses(scales, preds, keep)
