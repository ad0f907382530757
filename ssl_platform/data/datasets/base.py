"""What every image dataset shares: split checks, the `limit` subset, array storage.

Every dataset returns `(PIL.Image.Image, int)` from `__getitem__` and carries `targets`
(`[N]` int64, -1 when unlabelled), `classes` (names, empty when unlabelled) and `channels`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def check_split(split: str, valid: Sequence[str], dataset: str) -> str:
    """Return `split` if it is one of `valid`, else raise a ValueError listing them."""
    if split not in valid:
        raise ValueError(f"{dataset}: unknown split {split!r}; valid splits are {list(valid)}")
    return split


def stratified_holdout(targets: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold out `round(fraction * n)` of each class's `n` samples, drawn by `seed`; every class keeps at
    least one sample, so the held-out classes are a subset of the kept ones.

    Shared by the linear probe's validation split and the node / graph splits of `graphs.py`.

    Args:
        targets: [N] integer labels.
        fraction: share of each class held out.
        seed: seed of the per-class shuffles (classes in sorted order).

    Returns:
        kept [N - H] and held [H] int64 indices, both sorted.
    """
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    held = []
    for cls in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == cls))
        held.append(members[: min(round(fraction * len(members)), len(members) - 1)])
    held_idx = np.sort(np.concatenate(held)).astype(np.int64) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(targets)), held_idx).astype(np.int64), held_idx


def balanced_subset(targets: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced subset of `limit` samples, the same for the same seed.

    Classes are taken round-robin from per-class shuffles, so class counts differ by at
    most one (unless a class runs out). Unlabelled samples (-1) count as one class, so an
    unlabelled set gives a plain random subset.

    Args:
        targets: [N] integer labels, -1 for unlabelled.
        limit: number of samples to keep; None (or >= N) keeps everything.
        seed: seed of the shuffles.

    Returns:
        [min(limit, N)] int64 indices into `targets`, sorted so the subset keeps the data order.
    """
    targets = np.asarray(targets)
    if limit is None or limit >= len(targets):
        return np.arange(len(targets), dtype=np.int64)
    if limit < 1:
        raise ValueError(f"limit must be a positive number of samples or None, got {limit}")
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(targets))  # shuffled so the remainder does not favour class 0
    ranks, order, picks = [], [], []
    for position, cls in enumerate(classes):
        members = rng.permutation(np.flatnonzero(targets == cls))
        picks.append(members)
        ranks.append(np.arange(len(members)))
        order.append(np.full(len(members), position))
    picks, ranks, order = np.concatenate(picks), np.concatenate(ranks), np.concatenate(order)
    # round-robin: every class's first pick, then every class's second pick, ...
    chosen = picks[np.lexsort((order, ranks))[:limit]]
    return np.sort(chosen).astype(np.int64)


def to_pil(image: np.ndarray) -> Image.Image:
    """[H, W] uint8 -> PIL "L"; [H, W, 3] uint8 -> PIL "RGB"."""
    return Image.fromarray(np.ascontiguousarray(image))


class ArrayImages:
    """A labelled image set held in memory as one uint8 array.

    Args:
        images: [N, H, W] (grayscale) or [N, H, W, 3] (RGB) uint8.
        targets: [N] integer labels, -1 for unlabelled.
        classes: class names, index = label.
        limit: keep a class-balanced subset of this many samples (see `balanced_subset`).
        seed: seed of that subset.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        classes: Sequence[str],
        limit: int | None = None,
        seed: int = 0,
    ):
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(targets):
            raise ValueError(
                f"images must be [N, H, W] or [N, H, W, 3] uint8 with one target each, "
                f"got {images.dtype} {images.shape} and {len(targets)} targets"
            )
        keep = balanced_subset(targets, limit, seed)
        self.indices = keep  # [N] position of each kept sample in the full split
        self.images = images if len(keep) == len(images) else images[keep]  # no copy of a full set
        self.targets = np.asarray(targets, dtype=np.int64)[keep]
        self.classes = list(classes)
        self.channels = 1 if images.ndim == 3 else images.shape[-1]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return to_pil(self.images[index]), int(self.targets[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, classes={len(self.classes)}, channels={self.channels})"
