"""Image transforms: a PIL image in, a dict of the method's batch keys out (SimCLR views, eval, supervised).

All randomness comes from torch's global RNG (torchvision's transforms draw from it) and
Python's `random`, which the engine seeds per sample so that a resumed run sees the same
augmentations. Nothing here keeps its own RNG state, and nothing draws from numpy's global
RNG: lightly's blur does, so it is swapped for one that draws from torch.

The input is converted to the transform's `channels` first ("L" for 1, "RGB" for 3), so a
grayscale set can feed a 3-channel backbone and the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightly.transforms import SimCLRTransform
from lightly.transforms.gaussian_blur import GaussianBlur as LightlyGaussianBlur
from lightly.transforms.rotation import RandomRotate
from lightly.transforms.utils import IMAGENET_NORMALIZE
from PIL import Image, ImageFilter
from torch import Tensor
from torchvision.transforms import v2 as T

from ssl_platform.data.transforms.device_inputs import MODES, DeviceViewInputs
from ssl_platform.data.transforms.device_views import DeviceViews

# one-channel default: maps [0, 1] to [-1, 1]; dataset statistics can be passed instead
GRAY_NORMALIZE = {"mean": (0.5,), "std": (0.5,)}


def normalize_stats(
    channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std: the given ones, else ImageNet's (3 channels) or 0.5/0.5 (1 channel)."""
    if channels not in MODES:
        raise ValueError(f"channels must be one of {list(MODES)}, got {channels}")
    default = IMAGENET_NORMALIZE if channels == 3 else GRAY_NORMALIZE
    mean = list(default["mean"] if mean is None else mean)
    std = list(default["std"] if std is None else std)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need {channels} values for channels={channels}, got {mean} and {std}")
    return mean, std


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    """`image` as "L" (channels=1) or "RGB" (channels=3)."""
    mode = MODES[channels]
    return image if image.mode == mode else image.convert(mode)


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list:
    """PIL [H, W(, C)] uint8 -> Tensor [C, H, W] float32 in [0, 1], then (x - mean) / std."""
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean=mean, std=std)]


class TorchGaussianBlur(LightlyGaussianBlur):
    """lightly's random Gaussian blur, drawing from torch's global RNG instead of numpy's.

    Args:
        prob: probability of blurring.
        sigmas: (min, max) of the uniformly drawn blur sigma, in pixels.
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        if torch.rand(()).item() < self.prob:
            sigma = torch.empty(()).uniform_(self.sigmas[0], self.sigmas[1]).item()
            image = image.filter(ImageFilter.GaussianBlur(radius=sigma))
        return image


def _torch_rng_only(steps: list) -> list:
    """lightly's SimCLR view steps with every numpy-RNG step replaced or removed."""
    out = []
    for step in steps:
        if isinstance(step, LightlyGaussianBlur):
            out.append(TorchGaussianBlur(prob=step.prob, sigmas=step.sigmas))
        elif isinstance(step, RandomRotate):
            if step.prob > 0:  # we build it with rr_prob=0; a lightly change must not slip numpy RNG in
                raise RuntimeError("SimCLRViews: unexpected random rotation in lightly's SimCLR views")
        else:
            out.append(step)
    return out


class SimCLRViews:
    """SimCLR [0] views: `n_views` independent augmentations of one image, built on lightly's SimCLRTransform.

    Random resized crop, horizontal flip, colour jitter, random grayscale and Gaussian blur,
    then normalisation. With `channels=1` saturation, hue and grayscale are dropped (they mean
    nothing for one channel) and brightness/contrast jitter stays. For 28-32 px images the
    SimCLR paper's CIFAR setup uses `cj_strength=0.5` and no blur (`blur_prob=0`).

    - [0]: Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, 2020,
      https://arxiv.org/abs/2002.05709

    Args:
        size: output side in pixels.
        channels: 1 or 3; the input is converted to "L" or "RGB".
        n_views: number of views per image.
        min_scale: smallest crop area relative to the image.
        cj_strength: colour jitter strength (lightly's brightness 0.8, contrast 0.8, saturation 0.8,
            hue 0.2 are multiplied by it).
        cj_prob: probability of colour jitter.
        gray_prob: probability of converting to grayscale (3 channels only).
        blur_prob: probability of Gaussian blur (sigma in lightly's (0.1, 2) px).
        hflip_prob: probability of a horizontal flip.
        mean: per-channel mean (None: ImageNet's for 3 channels, 0.5 for 1).
        std: per-channel std (None: ImageNet's for 3 channels, 0.5 for 1).
        load_size: with `data.views_on: device`, the side of the square the workers store each image at
            (None: the images' own size, which must be one size for the whole set).

    Returns (from `__call__`):
        {"views": [Tensor [channels, size, size] float32] * n_views}
    """

    def __init__(
        self,
        size: int,
        channels: int = 3,
        n_views: int = 2,
        min_scale: float = 0.08,
        cj_strength: float = 1.0,
        cj_prob: float = 0.8,
        gray_prob: float = 0.2,
        blur_prob: float = 0.5,
        hflip_prob: float = 0.5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        load_size: int | None = None,
    ):
        mean, std = normalize_stats(channels, mean, std)
        if n_views < 1:
            raise ValueError(f"SimCLRViews: n_views must be at least 1, got {n_views}")
        color = channels == 3
        lightly_views = SimCLRTransform(
            input_size=size,
            cj_prob=cj_prob,
            cj_strength=cj_strength,
            cj_sat=0.8 if color else 0.0,
            cj_hue=0.2 if color else 0.0,
            min_scale=min_scale,
            random_gray_scale=gray_prob if color else 0.0,
            gaussian_blur=blur_prob,
            hf_prob=hflip_prob,
            rr_prob=0.0,
            normalize={"mean": mean, "std": std},
        )
        # lightly applies one view transform per view; we reuse it for any n_views
        steps = lightly_views.transforms[0].transform.transforms
        self.view = T.Compose(_torch_rng_only(list(steps)))
        self.channels, self.n_views, self.load_size = channels, n_views, load_size
        # the same views made per batch on the training device (`data.views_on: device`)
        self.device_views = DeviceViews(
            size, channels, n_views=n_views, min_scale=min_scale, hflip_prob=hflip_prob, cj_prob=cj_prob,
            brightness=0.8 * cj_strength, contrast=0.8 * cj_strength, saturation=0.8 * cj_strength if color else 0.0,
            hue=0.2 * cj_strength if color else 0.0, gray_prob=gray_prob if color else 0.0, blur_prob=blur_prob,
            blur_sigmas=(0.1, 2.0), mean=mean, std=std)

    def for_device(self) -> tuple[DeviceViewInputs, DeviceViews]:
        """(the workers' half, the device's half) of these views, for `data.views_on: device`."""
        return DeviceViewInputs(self.device_views, self.channels, self.load_size), self.device_views

    def __call__(self, image: Image.Image) -> dict[str, list[Tensor]]:
        image = _to_mode(image, self.channels)
        return {"views": [self.view(image) for _ in range(self.n_views)]}

    def __repr__(self) -> str:
        return f"SimCLRViews(n_views={self.n_views}, view={self.view})"


class EvalTransform:
    """Deterministic evaluation transform: resize the shorter side, center crop, normalise.

    Args:
        size: output side in pixels.
        channels: 1 or 3; the input is converted to "L" or "RGB".
        mean: per-channel mean (None: ImageNet's for 3 channels, 0.5 for 1).
        std: per-channel std (None: ImageNet's for 3 channels, 0.5 for 1).
        resize: shorter side before the crop (None: `size`, i.e. no border is cropped from a square image).

    Returns (from `__call__`):
        {"image": Tensor [channels, size, size] float32}
    """

    def __init__(
        self,
        size: int,
        channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        resize: int | None = None,
    ):
        mean, std = normalize_stats(channels, mean, std)
        self.channels = channels
        self.transform = T.Compose(
            [T.Resize(resize or size), T.CenterCrop(size), *_to_normalized_tensor(mean, std)]
        )

    def __call__(self, image: Image.Image) -> dict[str, Tensor]:
        return {"image": self.transform(_to_mode(image, self.channels))}

    def __repr__(self) -> str:
        return f"EvalTransform({self.transform})"


class SupervisedTransform:
    """Light augmentation for the supervised baseline: random resized crop and horizontal flip.

    Args:
        size: output side in pixels.
        channels: 1 or 3; the input is converted to "L" or "RGB".
        min_scale: smallest crop area relative to the image (mild by default, unlike SimCLR's 0.08).
        hflip_prob: probability of a horizontal flip.
        mean: per-channel mean (None: ImageNet's for 3 channels, 0.5 for 1).
        std: per-channel std (None: ImageNet's for 3 channels, 0.5 for 1).
        load_size: with `data.views_on: device`, the side of the square the workers store each image at
            (None: the images' own size, which must be one size for the whole set).

    Returns (from `__call__`):
        {"image": Tensor [channels, size, size] float32}
    """

    def __init__(
        self,
        size: int,
        channels: int = 3,
        min_scale: float = 0.5,
        hflip_prob: float = 0.5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        load_size: int | None = None,
    ):
        mean, std = normalize_stats(channels, mean, std)
        self.channels, self.load_size = channels, load_size
        self.device_views = DeviceViews(size, channels, n_views=1, min_scale=min_scale, hflip_prob=hflip_prob,
                                        mean=mean, std=std, key="image")
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(size, scale=(min_scale, 1.0)),
                T.RandomHorizontalFlip(p=hflip_prob),
                *_to_normalized_tensor(mean, std),
            ]
        )

    def __call__(self, image: Image.Image) -> dict[str, Tensor]:
        return {"image": self.transform(_to_mode(image, self.channels))}

    def for_device(self) -> tuple[DeviceViewInputs, DeviceViews]:
        """(the workers' half, the device's half) of this crop and flip, for `data.views_on: device`."""
        return DeviceViewInputs(self.device_views, self.channels, self.load_size), self.device_views

    def __repr__(self) -> str:
        return f"SupervisedTransform({self.transform})"
