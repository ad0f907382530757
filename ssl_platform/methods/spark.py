"""SparK: sparse and hierarchical masked modelling for convnets.

Tian, Jiang, Diao, Lin, Liu, Yuan. "Designing BERT for Convolutional Networks: Sparse and
Hierarchical Masked Modeling", ICLR 2023 (keyu-tian/SparK).

A random subset of the cells of the coarsest grid (input side / total stride) is hidden. The encoder
(any timm convnet, converted by `models/sparse.py`) treats the hidden cells as empty at every layer,
so it sees only the visible part of the image, like a ViT sees only its visible tokens in MAE. Its
stage outputs are "densified" (sparse norm, a learnable mask token per scale in the empty cells,
a projection) and a light UNet decoder rebuilds the pixels, coarse to fine. The loss is MSE on
per-patch-normalised pixels of the hidden patches only. Evaluation uses the plain dense encoder.

Deviations from the official code (keyu-tian/SparK@a63e386; docs/methods.md, SparK section): the
encoder is the timm model itself made sparse by hooks (`models/sparse.py`; officially re-implemented
ResNets and ConvNeXts), so ConvNeXt is timm's; masks come from the checkpointed training RNG, not a
module global; layers that average over positions (squeeze-excitation, GroupNorm) are refused;
parameters the stage outputs never reach (ConvNeXt's head norm) are frozen. The recipes add: crops
with bilinear, not bicubic, interpolation; the warm-up starts at 0, not 0.5% of the peak; bf16
autocast, not fp32. LAMB's own clipping (`max_grad_norm`, 5 officially) is the optimizer's kwarg.
"""

from __future__ import annotations

import math

import timm.layers
import torch
from torch import nn

from ssl_platform.losses.reconstruction import masked_patch_mse, patchify
from ssl_platform.masking.random import num_visible, random_keep_mask
from ssl_platform.methods.base import Method, build_backbone
from ssl_platform.models.sparse import sparse_batchnorm, sparsify


class _UpBlock(nn.Sequential):
    """SparK's decoder block: `[B, cin, h, w]` -> `[B, cout, 2h, 2w]` (transposed conv, two 3x3 convs)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.ConvTranspose2d(cin, cin, kernel_size=4, stride=2, padding=1),
            nn.Conv2d(cin, cin, 3, padding=1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        )


class SparK(Method):
    """Sparse masked modelling of a timm convnet with a hierarchical UNet decoder.

    Batch keys: `image`: `[B, C, H, W]`, normalised, H and W multiples of the encoder's total stride
    (SparK's augmentation is only a random resized crop and a flip: `SupervisedTransform`).

    Args:
        backbone: timm CNN name (resnet*, convnext*) or a module with timm's contract and
            `forward_intermediates`.
        small_input, in_chans, backbone_kwargs: as for every method (`build_backbone`);
            `backbone_kwargs: {drop_path_rate: 0.05}` as in the paper for ResNet-50.
        image_size: training side in pixels; must be a multiple of the total stride. The mask grid is
            image_size / total stride per side (7x7 for a ResNet at 224 px).
        mask_ratio: fraction of grid cells hidden; `round(cells * (1 - mask_ratio))` stay visible in
            every sample (20 of 49 at 0.6, the paper's setting).
        feature_levels: how many of the last stages feed the decoder (the paper: 4).
        decoder_width: decoder channels at the coarsest scale, halved at each of the log2(stride)
            upsampling blocks (the paper: 768 -> 384 -> 192 -> 96 -> 48 -> 24).
        densify_norm: norm on each stage output before the mask tokens: "bn" (visible-only batch
            norm, for BatchNorm backbones), "ln" (LayerNorm, for ConvNeXt), "none"; "auto" picks bn if
            the backbone has BatchNorm, else ln.
        norm_pix_loss: normalise each target patch to zero mean and unit variance (the paper: yes).

    Backbone parameters that the stage outputs do not depend on (ConvNeXt's head norm) are frozen,
    so DDP sees no unused parameters; they stay in the export with their initial values.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet50",
        small_input: bool = False,
        in_chans: int = 3,
        backbone_kwargs: dict | None = None,
        image_size: int = 224,
        mask_ratio: float = 0.6,
        feature_levels: int = 4,
        decoder_width: int = 768,
        densify_norm: str = "auto",
        norm_pix_loss: bool = True,
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, small_input, in_chans, backbone_kwargs)
        if not callable(getattr(self.backbone, "forward_intermediates", None)):
            raise TypeError(f"SparK needs a timm CNN with forward_intermediates; {type(self.backbone).__name__} has none")
        self.feature_levels, self.mask_ratio, self.norm_pix_loss = feature_levels, mask_ratio, norm_pix_loss
        self.in_chans = in_chans
        channels, strides = self._probe(in_chans, image_size)
        self.stride = strides[-1]
        if image_size % self.stride:
            raise ValueError(
                f"image_size {image_size} is not a multiple of the encoder's total stride {self.stride}; "
                f"use {math.ceil(image_size / self.stride) * self.stride} (resize or pad the input)"
            )
        num_visible((image_size // self.stride) ** 2, mask_ratio)  # fails early on a grid too coarse
        if any(s & (s - 1) for s in strides):
            raise ValueError(f"SparK's decoder doubles the resolution per block; feature strides {strides} are not powers of 2")
        self.sparse_mask = sparsify(self.backbone)

        levels = int(math.log2(self.stride))
        if decoder_width >> levels < 1:
            raise ValueError(f"decoder_width {decoder_width} cannot be halved {levels} times; use at least {2 ** levels}")
        widths = [decoder_width >> i for i in range(levels + 1)]  # coarsest (stride S) to finest (stride 1)
        # decoder level of each fed stage, coarsest first
        self.levels = [int(math.log2(self.stride // s)) for s in reversed(strides)]
        if densify_norm == "auto":
            densify_norm = "bn" if any(isinstance(m, nn.BatchNorm2d) for m in self.backbone.modules()) else "ln"
        if densify_norm not in ("bn", "ln", "none"):
            raise ValueError(f"densify_norm must be auto, bn, ln or none; got {densify_norm!r}")
        self.mask_tokens = nn.ParameterList()
        self.densify_norms, self.densify_projs = nn.ModuleList(), nn.ModuleList()
        for i, (c, level) in enumerate(zip(reversed(channels), self.levels)):
            token = nn.Parameter(torch.zeros(1, c, 1, 1))
            nn.init.trunc_normal_(token, std=0.02, a=-0.02, b=0.02)
            self.mask_tokens.append(token)
            self.densify_norms.append(
                sparse_batchnorm(c, self.sparse_mask) if densify_norm == "bn"
                else timm.layers.LayerNorm2d(c) if densify_norm == "ln" else nn.Identity()
            )
            width = widths[level]
            # 1x1 at the coarsest scale, 3x3 elsewhere (the paper's choice)
            if i == 0:
                proj = nn.Identity() if c == width else nn.Conv2d(c, width, 1)
            else:
                proj = nn.Conv2d(c, width, 3, padding=1)
            self.densify_projs.append(proj)
        self.decoder = nn.ModuleList(_UpBlock(widths[i], widths[i + 1]) for i in range(levels))
        self.to_pixels = nn.Conv2d(widths[-1], in_chans, 1)

    def _probe(self, in_chans: int, image_size: int) -> tuple[list[int], list[int]]:
        """Channels and strides of the fed stages (finest first), from one pass; freezes backbone
        parameters that pass does not reach (DDP would stop on them)."""
        was = self.backbone.training
        self.backbone.eval()
        # a power-of-2 side is divisible by any power-of-2 stride up to it, so the strides come out exact
        side = 2 ** math.ceil(math.log2(max(image_size, 64)))
        x = torch.zeros(1, in_chans, side, side)
        feats = self.backbone.forward_intermediates(x, indices=self.feature_levels, intermediates_only=True)
        sum(f.sum() for f in feats).backward()
        for p in self.backbone.parameters():
            if p.grad is None:
                p.requires_grad_(False)
            p.grad = None
        self.backbone.train(was)
        return [f.shape[1] for f in feats], [side // f.shape[-1] for f in feats]

    def no_weight_decay(self) -> set[str]:
        """The mask tokens are embeddings, not weights (the paper: no decay on them)."""
        return {f"mask_tokens.{i}" for i in range(len(self.mask_tokens))}

    def visible_grid(self, batch_size: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """A random mask `[B, 1, H/S, W/S]` bool, True = visible, with the exact visible count per sample."""
        if height % self.stride or width % self.stride:
            raise ValueError(
                f"input {height}x{width} is not divisible by the encoder's total stride {self.stride}; resize or "
                f"pad to a multiple (e.g. {math.ceil(height / self.stride) * self.stride} px)"
            )
        gh, gw = height // self.stride, width // self.stride
        keep = random_keep_mask(batch_size, gh * gw, num_visible(gh * gw, self.mask_ratio), device=device)
        return keep.view(batch_size, 1, gh, gw)

    def sparse_features(self, x: torch.Tensor, grid: torch.Tensor) -> list[torch.Tensor]:
        """The encoder on the visible cells of `grid` only: stage outputs, finest first, zero where masked."""
        with self.sparse_mask.active(grid):
            x = x.masked_fill(~self.sparse_mask.at(*x.shape[-2:]), 0.0)
            return self.backbone.forward_intermediates(x, indices=self.feature_levels, intermediates_only=True)

    def reconstruct(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """`x: [B, C, H, W]`, `grid: [B, 1, H/S, W/S]` bool -> reconstruction `[B, C, H, W]`."""
        feats = self.sparse_features(x, grid)
        out = None
        with self.sparse_mask.active(grid):
            dense = {}
            for i, (f, level) in enumerate(zip(reversed(feats), self.levels)):
                f = self.densify_norms[i](f)
                visible = self.sparse_mask.at(*f.shape[-2:])
                f = torch.where(visible, f, self.mask_tokens[i].to(f.dtype))
                dense[level] = self.densify_projs[i](f)
        for level, block in enumerate(self.decoder):
            if level in dense:
                out = dense[level] if out is None else out + dense[level]
            out = block(out)
        if len(self.decoder) in dense:  # a stage at stride 1 (small-input stems)
            out = out + dense[len(self.decoder)]
        return self.to_pixels(out)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["image"]
        b, _, h, w = x.shape
        grid = self.visible_grid(b, h, w, x.device)
        rec = self.reconstruct(x, grid)
        loss = masked_patch_mse(
            patchify(rec, self.stride), patchify(x, self.stride), ~grid.flatten(1), norm_pix=self.norm_pix_loss
        )
        return {"loss": loss}
