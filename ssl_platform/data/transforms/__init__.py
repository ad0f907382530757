"""Per-sample transforms: a dataset item in, a dict of the method's batch keys out.

- `image.py`: `SimCLRViews` (`{"views"}`), `EvalTransform` and `SupervisedTransform` (`{"image"}`) for
  PIL images, and `normalize_stats`, the per-channel mean / std defaults they share;
- `multispectral.py`: `MultispectralAugment` (pretraining) and `ResizeBands` (evaluation) for
  `[C, H, W]` band stacks;
- `image_text.py`: `ImageTextTransform` for image-text pairs (`{"image", "text_ids", "text_mask"}`).

Recipes, eval suites and zoo entries name them as `ssl_platform.data.transforms.<Class>` (the two
multispectral ones and the image-text one also by their older dataset-module paths, which re-export
them).
"""

from ssl_platform.data.transforms.image import (
    EvalTransform,
    SimCLRViews,
    SupervisedTransform,
    TorchGaussianBlur,
    normalize_stats,
)
from ssl_platform.data.transforms.image_text import ImageTextTransform
from ssl_platform.data.transforms.multispectral import MultispectralAugment, ResizeBands

__all__ = [
    "EvalTransform",
    "ImageTextTransform",
    "MultispectralAugment",
    "ResizeBands",
    "SimCLRViews",
    "SupervisedTransform",
    "TorchGaussianBlur",
    "normalize_stats",
]
