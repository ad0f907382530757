"""Multispectral transforms: pretraining crops, flips and right-angle rotations; evaluation resizing.

Band stacks are tensors already scaled to [0, 1] (`datasets/band_stats.py`); these transforms keep
that range and return the `{"image"}` batch key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, RandomResizedCrop


class MultispectralAugment:
    """Pretraining augmentation of `[C, H, W]` tensors -> `{"image": [C, size, size]}`.

    A random resized crop to `size` (bicubic, area fraction in [min_scale, 1]; SatMAE++: 384 px,
    0.6) when `size` is set, a horizontal flip, and with `rotate` a random multiple of 90° (aerial
    views have no up). Draws from torch's RNG, which the engine seeds per item.
    """

    def __init__(self, size: int | None = None, min_scale: float = 1.0, rotate: bool = True):
        self.crop = None if size is None else RandomResizedCrop(
            size, scale=(min_scale, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True)
        self.rotate = rotate

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.crop is not None:
            image = self.crop(image).clamp(0.0, 1.0)  # bicubic overshoots the [0, 1] band range
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        if self.rotate:
            image = torch.rot90(image, int(torch.randint(4, ())), dims=(-2, -1))
        return {"image": image.contiguous()}


class ResizeBands:
    """Evaluation transform: `[C, H, W]` -> `{"image": [C, size, size]}` (bilinear; None: unchanged)."""

    def __init__(self, size: int | None = None):
        self.size = size

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.size is not None and image.shape[-2:] != (self.size, self.size):
            image = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return {"image": image}
