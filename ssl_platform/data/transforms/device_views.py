"""Augmented views made per batch on the training device, with parameters drawn per sample.

`data.views_on: device` splits an image transform in two. The loader's workers only read the image,
convert it to the transform's channels, bring it to one fixed size as `uint8` and draw this sample's view
parameters from a generator seeded by (seed, epoch, index), exactly as the worker path seeds its draws, so
a resumed run sees the same views. The pixels are then made on the training device for the whole batch:
`DeviceViews` crops, resizes, flips, jitters, grays, blurs, solarises and normalises every view of every
sample in a handful of batched kernels. The parameters are the worker path's (lightly's order and ranges
as `SimCLRViews` builds them, torchvision's crop rule); `tests/data/test_device_views.py` checks the
distributions (KS tests) and the pixels (against the PIL ops the worker path runs, with the same
parameters).

What is our own and why (the libraries lack it):
- crop + resize: torchvision's batched ops share one box per batch, and kornia's per-sample crops resample
  without antialiasing, while the worker path (PIL) averages when it shrinks. One separable matrix per
  view with PIL's antialiased bilinear weights (`_resample_matrix`) gives the worker path's pixels in two
  batched matmuls, and folds the flip in for free.
- colour-jitter order: kornia's ColorJitter draws one order per batch and reads it on the host (a sync
  per step); torchvision draws one per call. Here each sample keeps its own order: at each of the 4
  positions every operation runs with the identity factor for the samples that do not have it there.
- brightness, contrast, saturation are torchvision's one-line blends with a factor per sample; hue
  (kornia.enhance.adjust_hue) and blur (kornia.filters.gaussian_blur2d) come from kornia, which takes a
  factor / sigma per sample.

Known differences from the worker path, tested with their bounds: PIL rounds to uint8 after every
operation (here values stay float until the end); PIL shifts hue on an 8-bit HSV image; PIL's Gaussian
blur is three box blurs approximating a Gaussian (here the exact kernel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import default_collate

MODES = {1: "L", 3: "RGB"}

# columns of one view's parameter row (`DeviceViews.draw` -> [n_views, N_PARAMS])
TOP, LEFT, HEIGHT, WIDTH, FLIP, JITTER, BRIGHT, CONTRAST, SAT, HUE = range(10)
ORDER = slice(10, 14)  # the colour ops' order: ORDER[p] is the op (0 b, 1 c, 2 s, 3 h) at position p
GRAY, BLUR, SIGMA, SOLARIZE, SRC_H, SRC_W = range(14, 20)
N_PARAMS = 20
IDENTITY = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation, hue factors that change nothing
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's "L" and torchvision's rgb_to_grayscale


def jitter_range(strength: float, center: float = 1.0) -> tuple[float, float]:
    """torchvision's ColorJitter range for a factor: [max(0, c - s), c + s]."""
    return max(0.0, center - strength), center + strength


class DeviceViews:
    """`n_views` augmented views of a batch of uint8 images, parameters per sample (see the module docstring).

    Args:
        size: output side in pixels.
        channels: 1 or 3 (the images' channels).
        n_views: views per image.
        min_scale: smallest crop area relative to the image (torchvision's RandomResizedCrop scale[0]).
        ratio: range of the crop's aspect ratio (log-uniform).
        hflip_prob: probability of a horizontal flip.
        cj_prob: probability of colour jitter.
        brightness, contrast, saturation: jitter strengths (factor uniform in [max(0, 1 - s), 1 + s]).
        hue: jitter strength (shift uniform in [-hue, hue], in turns).
        gray_prob: probability of converting to grayscale (3 channels).
        blur_prob: probability of a Gaussian blur; `blur_sigmas` its (min, max) sigma in pixels.
        solarize_prob: probability of inverting the pixels >= 0.5 (lightly's threshold 128).
        mean, std: per-channel normalisation.
        key: the batch key of the output: "views" (a list of `n_views` tensors) or "image" (one tensor;
            n_views must be 1).
    """

    def __init__(self, size: int, channels: int, n_views: int = 2, min_scale: float = 0.08,
                 ratio: Sequence[float] = (3 / 4, 4 / 3), hflip_prob: float = 0.5, cj_prob: float = 0.0,
                 brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0,
                 gray_prob: float = 0.0, blur_prob: float = 0.0, blur_sigmas: Sequence[float] = (0.1, 2.0),
                 solarize_prob: float = 0.0, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,),
                 key: str = "views"):
        if key not in ("views", "image") or (key == "image" and n_views != 1):
            raise ValueError(f"DeviceViews: key must be 'views', or 'image' with n_views=1; got {key!r}, {n_views}")
        if channels == 1 and (saturation or hue or gray_prob):
            raise ValueError("DeviceViews: saturation, hue and grayscale mean nothing for 1 channel; set them to 0")
        self.size, self.channels, self.n_views, self.key = size, channels, n_views, key
        self.scale, self.log_ratio = (min_scale, 1.0), (math.log(ratio[0]), math.log(ratio[1]))
        self.hflip_prob, self.cj_prob, self.gray_prob = hflip_prob, cj_prob, gray_prob
        self.blur_prob, self.blur_sigmas, self.solarize_prob = blur_prob, tuple(blur_sigmas), solarize_prob
        self.ranges = (jitter_range(brightness), jitter_range(contrast), jitter_range(saturation), (-hue, hue))
        # an op whose range is a point is the identity for every sample: skipped
        self.jitter_ops = [k for k, (lo, hi) in enumerate(self.ranges) if hi > lo]
        self.mean, self.std = list(mean), list(std)

    # ---- per sample, in the loader's workers ----

    def draw(self, generator: torch.Generator, height: int, width: int) -> Tensor:
        """One sample's view parameters: [n_views, N_PARAMS] float32, crop boxes in the source's pixels."""
        return torch.stack([self._draw_view(generator, height, width) for _ in range(self.n_views)])

    def _draw_view(self, g: torch.Generator, height: int, width: int) -> Tensor:
        row = torch.zeros(N_PARAMS)
        row[TOP:WIDTH + 1] = torch.tensor(self._crop(g, height, width), dtype=torch.float32)
        u = torch.rand(7, generator=g)
        row[FLIP] = float(u[0] < self.hflip_prob)
        row[JITTER] = float(u[1] < self.cj_prob)
        factors = torch.rand(4, generator=g)
        for k, (lo, hi) in enumerate(self.ranges):
            row[BRIGHT + k] = lo + (hi - lo) * factors[k] if row[JITTER] else IDENTITY[k]
        row[ORDER] = torch.randperm(4, generator=g).float()
        row[GRAY], row[BLUR], row[SOLARIZE] = float(u[2] < self.gray_prob), float(u[3] < self.blur_prob), \
            float(u[5] < self.solarize_prob)
        row[SIGMA] = self.blur_sigmas[0] + (self.blur_sigmas[1] - self.blur_sigmas[0]) * u[4]
        row[SRC_H], row[SRC_W] = height, width
        return row

    def _crop(self, g: torch.Generator, height: int, width: int) -> tuple[int, int, int, int]:
        """torchvision's RandomResizedCrop rule: 10 tries of a random area and log-uniform aspect, then the
        largest centred crop within the ratio range. Returns (top, left, height, width)."""
        area = height * width
        tries = torch.rand(10, 2, generator=g, dtype=torch.float64)
        positions = torch.rand(10, 2, generator=g, dtype=torch.float64)
        for (ua, ur), (ut, ul) in zip(tries.tolist(), positions.tolist()):
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * ua)
            aspect = math.exp(self.log_ratio[0] + (self.log_ratio[1] - self.log_ratio[0]) * ur)
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                # uniform integer positions, as torch.randint(0, H - h + 1)
                return min(int(ut * (height - h + 1)), height - h), min(int(ul * (width - w + 1)), width - w), h, w
        in_ratio, lo, hi = width / height, math.exp(self.log_ratio[0]), math.exp(self.log_ratio[1])
        if in_ratio < lo:
            w, h = width, round(width / lo)
        elif in_ratio > hi:
            h, w = height, round(height * hi)
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    # ---- per batch, on the training device ----

    def __call__(self, pixels: Tensor, params: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """Make the views.

        Args:
            pixels: [B, C, S, S'] uint8 (or float in [0, 1]) images, on the training device.
            params: [B, n_views, N_PARAMS] from `draw`, crop boxes in the source's pixels (SRC_H x SRC_W,
                which `pixels` may hold at another size).

        Returns:
            {"views": [n_views x [B, C, size, size] float32]} or {"image": [B, C, size, size]}.
        """
        b, v = params.shape[:2]
        x = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels.float()
        p = params.to(x.device, torch.float32).reshape(b * v, N_PARAMS)
        rows = _resample_matrix(p[:, TOP], p[:, HEIGHT], p[:, SRC_H], x.shape[-2], self.size)  # [BV, size, S]
        cols = _resample_matrix(p[:, LEFT], p[:, WIDTH], p[:, SRC_W], x.shape[-1], self.size)  # [BV, size, S']
        cols = torch.where(p[:, FLIP, None, None] > 0, cols.flip(-2), cols)
        # [B, 1, C, S, S'] -> [B, V, C, size, size]: every view of a sample reads the same pixels
        out = rows.view(b, v, 1, self.size, -1) @ x.unsqueeze(1) @ cols.view(b, v, 1, self.size, -1).transpose(-1, -2)
        out = self._colour(out.reshape(b * v, self.channels, self.size, self.size).clamp_(0, 1), p)
        out = (out - out.new_tensor(self.mean).view(1, -1, 1, 1)) / out.new_tensor(self.std).view(1, -1, 1, 1)
        out = out.view(b, v, self.channels, self.size, self.size)
        return {"image": out[:, 0]} if self.key == "image" else {"views": list(out.unbind(1))}

    def _colour(self, x: Tensor, p: Tensor) -> Tensor:
        """Jitter (each sample's own order), grayscale, blur, solarise. x: [N, C, H, W] in [0, 1]."""
        if self.jitter_ops:
            for position in range(4):
                for k in self.jitter_ops:
                    here = p[:, ORDER][:, position] == k
                    x = _JITTER[k](x, torch.where(here, p[:, BRIGHT + k], IDENTITY[k]))
        if self.gray_prob > 0:
            x = torch.where(p[:, GRAY, None, None, None] > 0, _gray(x).expand_as(x), x)
        if self.blur_prob > 0:
            sigma = p[:, SIGMA, None].expand(-1, 2)
            kernel = min(2 * math.ceil(3 * self.blur_sigmas[1]) + 1, _largest_odd(min(x.shape[-2:])))
            blurred = kornia.filters.gaussian_blur2d(x, (kernel, kernel), sigma, border_type="reflect")
            x = torch.where(p[:, BLUR, None, None, None] > 0, blurred, x)
        if self.solarize_prob > 0:
            x = torch.where((p[:, SOLARIZE, None, None, None] > 0) & (x >= 0.5), 1 - x, x)
        return x


def _largest_odd(n: int) -> int:
    return n if n % 2 else n - 1


def _resample_matrix(start: Tensor, length: Tensor, source: Tensor, stored: int, out: int) -> Tensor:
    """Per-view 1-D resampling weights of a crop, PIL's antialiased bilinear filter.

    The crop [start, start + length) of a source axis of `source` pixels, held in `stored` pixels, becomes
    `out` pixels: output pixel o is centred at start + (o + 0.5) * length / out (source pixels), its weights
    are the triangle filter widened by the shrink factor (antialiasing, as PIL's resize), restricted to the
    crop's pixels and normalised to sum 1.

    Args:
        start, length, source: [N] crop start, crop length and axis length, in source pixels.
        stored: the axis length of the stored image (source pixels map to stored ones by stored / source).
        out: output pixels.

    Returns:
        [N, out, stored] weights.
    """
    to_stored = stored / source  # [N]
    start, length = start * to_stored, length * to_stored
    scale = length / out  # stored pixels per output pixel
    support = scale.clamp(min=1.0)
    centre = start[:, None] + (torch.arange(out, device=start.device) + 0.5) * scale[:, None]  # [N, out]
    k = torch.arange(stored, device=start.device) + 0.5  # pixel centres
    w = (1 - ((k - centre[..., None]) / support[:, None, None]).abs()).clamp(min=0)  # [N, out, stored]
    inside = (k >= start.floor()[:, None]) & (k <= (start + length).ceil()[:, None])  # the crop's pixels
    w = w * inside[:, None, :]
    return w / w.sum(-1, keepdim=True).clamp(min=1e-12)


def _gray(x: Tensor) -> Tensor:
    """[N, C, H, W] -> [N, 1, H, W] luma (the image itself for one channel)."""
    if x.shape[1] == 1:
        return x
    return (x * x.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _factor(f: Tensor) -> Tensor:
    return f.view(-1, 1, 1, 1)


def _brightness(x: Tensor, f: Tensor) -> Tensor:
    return (x * _factor(f)).clamp(0, 1)


def _contrast(x: Tensor, f: Tensor) -> Tensor:
    mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
    return (_factor(f) * x + (1 - _factor(f)) * mean).clamp(0, 1)


def _saturation(x: Tensor, f: Tensor) -> Tensor:
    return (_factor(f) * x + (1 - _factor(f)) * _gray(x)).clamp(0, 1)


def _hue(x: Tensor, f: Tensor) -> Tensor:
    # kornia's hue shift is in radians; ours (torchvision's) in turns
    return kornia.enhance.adjust_hue(x, _factor(f) * (2 * math.pi)).clamp(0, 1)


_JITTER = (_brightness, _contrast, _saturation, _hue)


class DeviceViewInputs:
    """The workers' half of `data.views_on: device`: an image in, its uint8 pixels and view parameters out.

    Called by `TransformedDataset` as `seeded(image, seed)`: the parameters come from a generator seeded
    by the draw's seed (the global RNGs are not touched, so nothing needs forking per sample).

    Args:
        views: the batch half, whose `draw` gives the parameters.
        channels: 1 or 3; the image is converted to "L" or "RGB".
        load_size: side of the stored square image (crops are then taken from it, boxes scaled); None keeps
            the image's own size, which must then be the same for every image of the data set.

    Returns (from `seeded`):
        {"pixels": Tensor [channels, S, S'] uint8, "view_params": Tensor [n_views, N_PARAMS] float32}
    """

    def __init__(self, views: DeviceViews, channels: int, load_size: int | None = None):
        self.views, self.channels, self.load_size = views, channels, load_size

    def seeded(self, image: Image.Image, seed: int) -> dict[str, Tensor]:
        image = image if image.mode == MODES[self.channels] else image.convert(MODES[self.channels])
        width, height = image.size
        if self.load_size is not None and image.size != (self.load_size, self.load_size):
            image = image.resize((self.load_size, self.load_size), Image.BILINEAR)
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        params = self.views.draw(torch.Generator().manual_seed(seed), height, width)
        return {"pixels": pixels.contiguous(), "view_params": params}

    def __call__(self, image: Image.Image) -> dict[str, Tensor]:
        """Without a draw seed (a plain iteration): parameters from torch's global RNG."""
        return self.seeded(image, int(torch.randint(2**62, ())))


def stack_device_inputs(items: list[dict]) -> dict:
    """Collate for `data.views_on: device`: `default_collate`, with the error a user can act on when the
    stored images differ in size (a folder of photos needs one `load_size`)."""
    sizes = {tuple(item["pixels"].shape) for item in items}
    if len(sizes) > 1:
        shown = ", ".join("x".join(map(str, s[1:])) for s in sorted(sizes)[:3])
        raise ValueError(f"data.views_on=device needs one stored image size, but a batch holds {shown}; set "
                         "data.transform.load_size (e.g. 256 for 224 px views), or data.views_on=workers")
    return default_collate(items)


def views_from_batch(views: DeviceViews, batch: dict) -> dict:
    """The batch the method sees: `pixels` and `view_params` replaced by the views (on their device)."""
    batch = dict(batch)
    pixels, params = batch.pop("pixels"), batch.pop("view_params")
    return {**batch, **views(pixels, params)}
