"""Multispectral transforms: pretraining crops, flips and right-angle rotations; evaluation resizing.

Band stacks are tensors already scaled to [0, 1] (`datasets/band_stats.py`); these transforms keep
that range and return the `{"image"}` batch key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, RandomResizedCrop

from ssl_platform.data.transforms.device_inputs import DeviceViewInputs
from ssl_platform.data.transforms.device_views import DeviceViews


class MultispectralAugment:
    """Pretraining augmentation of `[C, H, W]` tensors -> `{"image": [C, size, size]}`.

    A random resized crop to `size` (bicubic, area fraction in [min_scale, 1]; SatMAE++: 384 px,
    0.6) when `size` is set, a horizontal flip, and with `rotate` a random multiple of 90° (aerial
    views have no up). Draws from torch's RNG, which the engine seeds per item. `load_size`: with
    `data.views_on: device`, the square side the workers store each tile at (None: the tiles' own size).
    """

    def __init__(self, size: int | None = None, min_scale: float = 1.0, rotate: bool = True,
                 load_size: int | None = None):
        self.crop = None if size is None else RandomResizedCrop(
            size, scale=(min_scale, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True)
        self.rotate = rotate
        # the same crop, flip and rotation made per batch on the training device (`data.views_on: device`);
        # the channel count is the data's, known only per batch (DeviceViews reads it from the pixels)
        self.device_views = DeviceViews(size, channels=0, n_views=1, min_scale=None if size is None else min_scale,
                                        hflip_prob=0.5, mean=None, std=None, interpolation="bicubic",
                                        rotate=rotate, key="image")
        self.load_size = load_size  # views_on: device: the square side that tiles of different sizes are stored at

    def for_device(self) -> tuple[DeviceViewInputs, DeviceViews]:
        """(the workers' half: the band stack and its view parameters, the device's half), for
        `data.views_on: device`."""
        return DeviceViewInputs(self.device_views, channels=0, load_size=self.load_size), self.device_views

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
