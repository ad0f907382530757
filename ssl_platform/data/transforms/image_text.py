"""The image-text transform: a pair item in, the batch keys of image-text methods (M3AE) out.

`{"image": PIL, "text": str}` (the items of `data/datasets/pairs.py`) -> `image`, `text_ids`,
`text_mask`; the tokenizer is `models/text.py`'s. Random draws (the optional resized crop) come from
torch's RNG, which the engine seeds per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torchvision.transforms as T

from ssl_platform.data.root import resolve_data_path
from ssl_platform.data.transforms.device_inputs import DeviceViewInputs
from ssl_platform.data.transforms.device_views import DeviceViews
from ssl_platform.models.text import encode, load_tokenizer, special_ids


class ImageTextTransform:
    """`{"image": PIL, "text": str}` -> `{"image": [C, S, S], "text_ids": [L], "text_mask": [L]}`.

    The image is resized (or, with `min_scale`, randomly resized-cropped, M3AE's only augmentation) and
    normalised; the text is tokenized, cut or padded to `max_length` tokens. Without a tokenizer only
    `{"image"}` comes out: the eval transform of image-only protocols (category probes, kNN).

    Args:
        tokenizer: path of a `tokenizers` JSON file or of a Hugging Face tokenizer directory (relative: under
            the data root, then the working directory, `data/root.py`); None: images only.
        size: image side in pixels.
        max_length: tokens per text, [CLS] and [SEP] included.
        channels: 1 or 3.
        mean, std: per-channel normalisation (None: 0.5 / 0.5, artwork is not ImageNet).
        min_scale: None for a plain resize (evaluation), else the smallest crop area of a random resized crop.
        load_size: with `data.views_on: device`, the side of the square the workers store each image at
            (None: the images' own size, which must be one size for the whole set).
    """

    def __init__(self, tokenizer: str | None, size: int, max_length: int = 16, channels: int = 3,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 min_scale: float | None = None, load_size: int | None = None):
        self.tokenizer = load_tokenizer(resolve_data_path(tokenizer)) if tokenizer is not None else None
        if self.tokenizer is not None:
            special_ids(self.tokenizer)  # a tokenizer without [MASK] / [PAD] fails here, not inside a worker
        self.max_length = max_length
        self.channels = channels
        mean = list(mean) if mean is not None else [0.5] * channels
        std = list(std) if std is not None else [0.5] * channels
        resize = (T.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True) if min_scale is not None
                  else T.Resize((size, size), antialias=True))
        self.image = T.Compose([resize, T.ToTensor(), T.Normalize(mean, std)])
        # the same crop (or, without min_scale, the same whole-image resize) made per batch on the
        # training device (`data.views_on: device`)
        self.device_views = DeviceViews(size, channels, n_views=1, min_scale=min_scale, hflip_prob=0.0,
                                        mean=mean, std=std, key="image")
        self.load_size = load_size

    def for_device(self) -> tuple[ImageTextDeviceInputs, DeviceViews]:
        """(the workers' half: pixels, view parameters and the tokens; the device's half: the crop)."""
        return ImageTextDeviceInputs(self, DeviceViewInputs(self.device_views, self.channels, self.load_size)), \
            self.device_views

    def tokens(self, text: str) -> dict[str, Any]:
        """`{"text_ids": [L], "text_mask": [L]}`, or {} without a tokenizer."""
        if self.tokenizer is None:
            return {}
        ids, mask = encode(self.tokenizer, [text], self.max_length)
        return {"text_ids": ids[0], "text_mask": mask[0]}

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        _check_pair(sample)
        image = self.image(sample["image"].convert("L" if self.channels == 1 else "RGB"))
        return {"image": image, **self.tokens(sample["text"])}


def _check_pair(sample: Any) -> None:
    if not isinstance(sample, dict) or "image" not in sample or "text" not in sample:
        raise TypeError(f"ImageTextTransform reads {{'image', 'text'}} items of a pair set, got {type(sample).__name__}")


class ImageTextDeviceInputs:
    """The workers' half of `ImageTextTransform` for `data.views_on: device`: the image's uint8 pixels and
    crop parameters (`DeviceViewInputs`) and the text's tokens.

    Returns (from `seeded`):
        {"pixels": [C, S, S] uint8, "view_params": [1, N_PARAMS], "text_ids": [L], "text_mask": [L]}
    """

    def __init__(self, transform: ImageTextTransform, inputs: DeviceViewInputs):
        self.transform, self.inputs = transform, inputs

    def seeded(self, sample: dict[str, Any], seed: int) -> dict[str, Any]:
        _check_pair(sample)
        return {**self.inputs.seeded(sample["image"], seed), **self.transform.tokens(sample["text"])}
