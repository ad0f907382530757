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
    """

    def __init__(self, tokenizer: str | None, size: int, max_length: int = 16, channels: int = 3,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 min_scale: float | None = None):
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

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(sample, dict) or "image" not in sample or "text" not in sample:
            raise TypeError(f"ImageTextTransform reads {{'image', 'text'}} items of a pair set, got {type(sample).__name__}")
        image = self.image(sample["image"].convert("L" if self.channels == 1 else "RGB"))
        if self.tokenizer is None:
            return {"image": image}
        ids, mask = encode(self.tokenizer, [sample["text"]], self.max_length)
        return {"image": image, "text_ids": ids[0], "text_mask": mask[0]}
