"""Augmented views made per batch on the training device, with parameters drawn per sample.

`data.views_on: device` splits an image transform in two. The loader's workers only read the image,
convert it to the transform's channels, bring it to one fixed size as `uint8` and draw this sample's view
parameters from a generator seeded by (seed, epoch, index), exactly as the worker path seeds its draws, so
a resumed run sees the same views (that half is `device_inputs.py`; `DeviceViews.draw` is its draw).
The pixels are then made on the training device for the whole batch:
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

import functools
import math
from collections.abc import Sequence

import kornia
import torch
from torch import Tensor

# columns of one view's parameter row (`DeviceViews.draw` -> [n_views, N_PARAMS])
TOP, LEFT, HEIGHT, WIDTH, FLIP, JITTER, BRIGHT, CONTRAST, SAT, HUE = range(10)
ORDER = slice(10, 14)  # the colour ops' order: ORDER[p] is the op (0 b, 1 c, 2 s, 3 h) at position p
GRAY, BLUR, SIGMA, SOLARIZE, SRC_H, SRC_W, ROTATE = range(14, 21)
N_PARAMS = 21
# one view's uniforms (`DeviceViews.draw`): 10 crop tries x (area, aspect, top, left), then the rest
U_CROP, U_FLIP, U_JITTER, U_FACTORS, U_ORDER = slice(0, 40), 40, 41, slice(42, 46), slice(46, 50)
U_GRAY, U_BLUR, U_SIGMA, U_SOLARIZE, U_ROTATE = 50, 51, 52, 53, 54
N_UNIFORMS = 55
IDENTITY = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation, hue factors that change nothing
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's "L" and torchvision's rgb_to_grayscale


def jitter_range(strength: float, center: float = 1.0) -> tuple[float, float]:
    """torchvision's ColorJitter range for a factor: [max(0, c - s), c + s]."""
    return max(0.0, center - strength), center + strength


class DeviceViews:
    """`n_views` augmented views of a batch of uint8 images, parameters per sample (see the module docstring).

    Args:
        size: output side in pixels; None: the stored images' side (square images, no crop).
        channels: the images' channels (1 or 3 for the colour operations; any number for band stacks).
        n_views: views per image.
        min_scale: smallest crop area relative to the image (torchvision's RandomResizedCrop scale[0]);
            None: no crop, the whole image is resized to `size` (aspect not kept, as a plain resize).
        ratio: range of the crop's aspect ratio (log-uniform).
        hflip_prob: probability of a horizontal flip.
        cj_prob: probability of colour jitter.
        brightness, contrast, saturation: jitter strengths (factor uniform in [max(0, 1 - s), 1 + s]).
        hue: jitter strength (shift uniform in [-hue, hue], in turns).
        gray_prob: probability of converting to grayscale (3 channels).
        blur_prob: probability of a Gaussian blur; `blur_sigmas` its (min, max) sigma in pixels.
        solarize_prob: probability of inverting the pixels >= 0.5 (lightly's threshold 128).
        mean, std: per-channel normalisation; None: none (band stacks already scaled to [0, 1]).
        interpolation: "bilinear" or "bicubic" (both antialiased when shrinking, as PIL and torchvision's
            `antialias=True`: bicubic is the Keys kernel with a = -0.5).
        rotate: also a random multiple of 90 degrees per view (aerial images have no up), after the flip.
        key: the batch key of the output: "views" (a list of `n_views` tensors) or "image" (one tensor;
            n_views must be 1).
    """

    def __init__(self, size: int | None, channels: int, n_views: int = 2, min_scale: float | None = 0.08,
                 ratio: Sequence[float] = (3 / 4, 4 / 3), hflip_prob: float = 0.5, cj_prob: float = 0.0,
                 brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0,
                 gray_prob: float = 0.0, blur_prob: float = 0.0, blur_sigmas: Sequence[float] = (0.1, 2.0),
                 solarize_prob: float = 0.0, mean: Sequence[float] | None = (0.5,),
                 std: Sequence[float] | None = (0.5,), interpolation: str = "bilinear", rotate: bool = False,
                 key: str = "views"):
        if key not in ("views", "image") or (key == "image" and n_views != 1):
            raise ValueError(f"DeviceViews: key must be 'views', or 'image' with n_views=1; got {key!r}, {n_views}")
        if channels == 1 and (saturation or hue or gray_prob):
            raise ValueError("DeviceViews: saturation, hue and grayscale mean nothing for 1 channel; set them to 0")
        if channels not in (1, 3) and (brightness or contrast or saturation or hue or gray_prob):
            raise ValueError(f"DeviceViews: colour jitter and grayscale need 1 or 3 channels, not {channels}")
        if interpolation not in KERNELS:
            raise ValueError(f"DeviceViews: interpolation must be one of {sorted(KERNELS)}, got {interpolation!r}")
        if size is None and min_scale is not None:
            raise ValueError("DeviceViews: size=None keeps the stored size and takes no crop; set min_scale=None")
        self.size, self.channels, self.n_views, self.key = size, channels, n_views, key
        self.scale = None if min_scale is None else (min_scale, 1.0)
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.hflip_prob, self.cj_prob, self.gray_prob = hflip_prob, cj_prob, gray_prob
        self.blur_prob, self.blur_sigmas, self.solarize_prob = blur_prob, tuple(blur_sigmas), solarize_prob
        self.ranges = (jitter_range(brightness), jitter_range(contrast), jitter_range(saturation), (-hue, hue))
        # an op whose range is a point is the identity for every sample: skipped
        self.jitter_ops = [k for k, (lo, hi) in enumerate(self.ranges) if hi > lo]
        self.mean = None if mean is None else list(mean)
        self.std = None if std is None else list(std)
        self.kernel, self.rotate = KERNELS[interpolation], rotate

    # ---- per sample, in the loader's workers ----

    def draw(self, generator: torch.Generator, height: int, width: int) -> Tensor:
        """One sample's view parameters: [n_views, N_PARAMS] float32, crop boxes in the source's pixels.

        All of a view's randomness is one draw of `N_UNIFORMS` uniforms from `generator` (a handful of
        torch calls per sample, not one per parameter: this runs per sample in the workers)."""
        u = torch.rand(self.n_views, N_UNIFORMS, generator=generator, dtype=torch.float64).tolist()
        return torch.tensor([self._view(row, height, width) for row in u], dtype=torch.float32)

    def _view(self, u: list[float], height: int, width: int) -> list[float]:
        """One view's parameter row from its uniforms `u` (layout: the `U_*` slices)."""
        row = [0.0] * N_PARAMS
        row[TOP:WIDTH + 1] = self._crop(u[U_CROP], height, width)
        row[FLIP] = float(u[U_FLIP] < self.hflip_prob)
        row[JITTER] = float(u[U_JITTER] < self.cj_prob)
        for k, (lo, hi) in enumerate(self.ranges):
            row[BRIGHT + k] = lo + (hi - lo) * u[U_FACTORS][k] if row[JITTER] else IDENTITY[k]
        # a uniformly random order of the 4 ops: the ranks of 4 uniforms (as torch.randperm(4))
        keys = u[U_ORDER]
        row[ORDER] = [float(op) for op in sorted(range(4), key=keys.__getitem__)]
        row[GRAY] = float(u[U_GRAY] < self.gray_prob)
        row[BLUR] = float(u[U_BLUR] < self.blur_prob)
        row[SIGMA] = self.blur_sigmas[0] + (self.blur_sigmas[1] - self.blur_sigmas[0]) * u[U_SIGMA]
        row[SOLARIZE] = float(u[U_SOLARIZE] < self.solarize_prob)
        row[SRC_H], row[SRC_W] = float(height), float(width)
        row[ROTATE] = float(min(int(u[U_ROTATE] * 4), 3)) if self.rotate else 0.0  # as torch.randint(4)
        return row

    def _crop(self, u: list[float], height: int, width: int) -> list[float]:
        """torchvision's RandomResizedCrop rule: 10 tries of a random area and log-uniform aspect, then the
        largest centred crop within the ratio range. `u`: 40 uniforms (4 per try). Returns (top, left, h, w)."""
        if self.scale is None:
            return [0, 0, height, width]
        area = height * width
        for t in range(10):
            ua, ur, ut, ul = u[4 * t:4 * t + 4]
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * ua)
            aspect = math.exp(self.log_ratio[0] + (self.log_ratio[1] - self.log_ratio[0]) * ur)
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                # uniform integer positions, as torch.randint(0, H - h + 1)
                return [min(int(ut * (height - h + 1)), height - h), min(int(ul * (width - w + 1)), width - w), h, w]
        in_ratio, lo, hi = width / height, math.exp(self.log_ratio[0]), math.exp(self.log_ratio[1])
        if in_ratio < lo:
            w, h = width, round(width / lo)
        elif in_ratio > hi:
            h, w = height, round(height * hi)
        else:
            w, h = width, height
        return [(height - h) // 2, (width - w) // 2, h, w]

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
        c, size = x.shape[1], self.size or x.shape[-1]
        p = params.to(x.device, torch.float32).reshape(b * v, N_PARAMS)
        turns = p[:, ROTATE].long()
        if self.scale is None and x.shape[-2:] == (size, size):
            # the whole image at its stored size: the resampling would be the identity (exactly: the filters
            # weigh the pixel itself 1 and its neighbours 0), so each view is one of the image's 8 flips and
            # turns, read in one gather (one pass over the pixels, no branch per transform)
            which = (p[:, FLIP] > 0).long() * 4 + turns  # [BV]: flip, then `turns` right angles
            index = _turn_table(size, x.device)[which].view(b, v, 1, size * size).expand(-1, -1, c, -1)
            flat = x.flatten(-2).unsqueeze(1).expand(-1, v, -1, -1)  # [B, V, C, S*S], no copy
            out = flat.gather(-1, index).view(b * v, c, size, size).clamp_(0, 1)
        else:
            out = self._resample(x, p, turns, b, v, size)
        out = self._colour(out, p)
        if self.mean is not None:
            out = (out - out.new_tensor(self.mean).view(1, -1, 1, 1)) / out.new_tensor(self.std).view(1, -1, 1, 1)
        out = out.view(b, v, c, size, size)
        return {"image": out[:, 0]} if self.key == "image" else {"views": list(out.unbind(1))}

    def _resample(self, x: Tensor, p: Tensor, turns: Tensor, b: int, v: int, size: int) -> Tensor:
        """Crop, resize, flip (and turn) every view with two batched matmuls. x: [B, C, S, S'] ->
        [B*V, C, size, size]."""
        c = x.shape[1]
        rows = _resample_matrix(p[:, TOP], p[:, HEIGHT], p[:, SRC_H], x.shape[-2], size, self.kernel)  # [BV, size, S]
        cols = _resample_matrix(p[:, LEFT], p[:, WIDTH], p[:, SRC_W], x.shape[-1], size, self.kernel)  # [BV, size, S']
        # the flips folded into the resampling matrices (a flipped matrix gives exactly the flipped product):
        # one select per view, not a flip of the whole batch
        flip_cols = p[:, FLIP] > 0
        if self.rotate:
            # rot90 by k turns after the flip: k=1 flips columns then transposes, k=2 flips rows and
            # columns, k=3 flips rows then transposes
            flip_cols = flip_cols ^ ((turns == 1) | (turns == 2))
            rows = torch.where(((turns == 2) | (turns == 3))[:, None, None], rows.flip(-2), rows)
        cols = torch.where(flip_cols[:, None, None], cols.flip(-2), cols)
        # [B, 1, C, S, S'] -> [B, V, C, size, size]: every view of a sample reads the same pixels
        out = rows.view(b, v, 1, size, -1) @ x.unsqueeze(1) @ cols.view(b, v, 1, size, -1).transpose(-1, -2)
        out = out.reshape(b * v, c, size, size).clamp_(0, 1)  # bicubic overshoots [0, 1]
        if self.rotate:
            # contiguous: the select keeps the transposed operand's strides, which the model would then read
            out = torch.where((turns % 2 == 1)[:, None, None, None], out.transpose(-1, -2), out).contiguous()
        return out

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


@functools.lru_cache(maxsize=8)
def _turn_table(size: int, device: torch.device) -> Tensor:
    """[8, size * size]: for row 4 * flip + k, the flat source pixel of each output pixel of
    `rot90(flip(image) if flip else image, k)` (torch.rot90's direction, the worker path's)."""
    base = torch.arange(size * size, device=device).view(size, size)
    return torch.stack([torch.rot90(base.flip(-1) if flip else base, k, dims=(-2, -1)).reshape(-1)
                        for flip in (False, True) for k in range(4)])


def _triangle(x: Tensor) -> Tensor:
    """The bilinear filter (support 1)."""
    return (1 - x.abs()).clamp(min=0)


def _cubic(x: Tensor) -> Tensor:
    """The Keys cubic filter with a = -0.5 (support 2), PIL's and torch's antialiased bicubic."""
    a, t = -0.5, x.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


KERNELS = {"bilinear": _triangle, "bicubic": _cubic}


def _resample_matrix(start: Tensor, length: Tensor, source: Tensor, stored: int, out: int,
                     kernel=_triangle) -> Tensor:
    """Per-view 1-D resampling weights of a crop, PIL's antialiased filters.

    The crop [start, start + length) of a source axis of `source` pixels, held in `stored` pixels, becomes
    `out` pixels: output pixel o is centred at start + (o + 0.5) * length / out (source pixels), its weights
    are the filter (`kernel`: triangle or cubic) widened by the shrink factor (antialiasing, as PIL's
    resize), restricted to the crop's pixels and normalised to sum 1.

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
    w = kernel((k - centre[..., None]) / support[:, None, None])  # [N, out, stored]
    inside = (k >= start.floor()[:, None]) & (k <= (start + length).ceil()[:, None])  # the crop's pixels
    w = w * inside[:, None, :]
    return w / w.sum(-1, keepdim=True)


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
