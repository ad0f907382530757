"""scikit-learn's bundled handwritten digits (UCI optdigits): 1797 8x8 images, 10 classes, no download."""

from __future__ import annotations

import numpy as np

from ssl_platform.data.datasets.base import ArrayImages, check_split

SPLITS = ("train", "test")


def digits_split(
    split: str, test_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One side of a stratified, deterministic train/test split of `sklearn.datasets.load_digits`.

    Args:
        split: "train" or "test".
        test_fraction: share of every class that goes to "test", in (0, 1).
        seed: seed of the split; train and test with the same seed are disjoint.

    Returns:
        images [N, 8, 8] uint8 (0..16 scaled to 0..255), labels [N] int64, and the [N] row
        indices into `load_digits()` (for checks against sklearn's data).
    """
    check_split(split, SPLITS, "Digits")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"Digits: test_fraction must be in (0, 1), got {test_fraction}")
    # imported here so that importing the datasets package stays quick for the CLI
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    rows = np.arange(len(digits.target))
    train_rows, test_rows = train_test_split(
        rows, test_size=test_fraction, stratify=digits.target, random_state=seed, shuffle=True
    )
    rows = np.sort(train_rows if split == "train" else test_rows)
    # pixel values are counts 0..16 of set pixels in 4x4 blocks; round to the 0..255 grey scale
    images = np.rint(digits.images[rows] * (255.0 / 16.0)).astype(np.uint8)  # [N, 8, 8]
    return images, digits.target[rows].astype(np.int64), rows


class Digits(ArrayImages):
    """sklearn's digits as 8x8 grayscale images, split into stratified train and test parts.

    Items are `(PIL "L" image [8x8], label)`; `classes` are '0'..'9'. Made for the quick
    evaluation suite and tests: it is bundled with scikit-learn, so it needs no preparing.

    Args:
        split: "train" or "test".
        test_fraction: share of every class held out as "test".
        seed: seed of the train/test split and of the `limit` subset.
        limit: keep a class-balanced subset of this many samples of the split.
    """

    CLASSES = tuple(str(digit) for digit in range(10))

    def __init__(
        self, split: str = "train", test_fraction: float = 0.25, seed: int = 0, limit: int | None = None
    ):
        images, labels, rows = digits_split(split, test_fraction, seed)
        super().__init__(images, labels, self.CLASSES, limit=limit, seed=seed)
        self.rows = rows[self.indices]  # [N] row of each kept sample in load_digits()
