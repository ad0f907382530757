"""Per-band statistics of multispectral images and SatMAE's band scaling that uses them.

Statistics are computed once per data directory, over the valid pixels of its images, and stored
next to the files as `band_stats.json`; every later read, by any split, uses the stored ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ssl_platform.data.datasets.geotiff import GeoTiffError

STATS_FILE = "band_stats.json"


def band_stats(images: Iterable[np.ndarray]) -> dict[str, list[float]]:
    """Per-band mean and std over the valid pixels of `images` (each `[C, H, W]`).

    A pixel is valid unless every band is 0 (the Landsat fill value); float64 sums, so uint16 scenes
    of millions of pixels do not lose precision.
    """
    total = total_sq = count = None
    for image in images:
        pixels = image.reshape(image.shape[0], -1).astype(np.float64)
        pixels = pixels[:, pixels.any(axis=0)]  # [C, valid]
        if total is None:
            total, total_sq, count = np.zeros(len(pixels)), np.zeros(len(pixels)), 0
        if len(pixels) != len(total):
            raise GeoTiffError(f"band counts differ between files: {len(total)} and {len(pixels)}")
        total, total_sq, count = total + pixels.sum(1), total_sq + (pixels ** 2).sum(1), count + pixels.shape[1]
    if not count:
        raise GeoTiffError("no valid pixel to compute band statistics from (every pixel is 0 in every band)")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return {"mean": mean.tolist(), "std": std.tolist(), "pixels": int(count)}


def stored_band_stats(directory: Path, images: Iterable[np.ndarray] | None = None) -> dict[str, list[float]]:
    """`directory/band_stats.json`; computed from `images` and written (atomically) when absent."""
    path = directory / STATS_FILE
    if path.is_file():
        try:
            stats = json.loads(path.read_text())
        except ValueError as err:  # a cut-off write or a foreign file; json's message names no file
            raise ValueError(f"{path} is not valid JSON ({err}); delete it to recompute the band statistics") from err
        if not isinstance(stats, dict) or not {"mean", "std"} <= set(stats):
            raise ValueError(f"{path} lacks 'mean' or 'std'; delete it to recompute the band statistics")
        return stats
    if images is None:
        raise FileNotFoundError(f"{path} is missing")
    stats = band_stats(images)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(json.dumps(stats, indent=1))
    os.replace(tmp, path)
    return stats


def scale_bands(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """SatMAE's normalisation: `[C, H, W]` -> float32 in [0, 1], each band clipped to mean ± 2σ.

    A band with σ = 0 maps to 0.5 instead of dividing by zero (the NaNs the reference notes warn of).
    """
    mean = np.asarray(mean, np.float64)[:, None, None]
    std = np.asarray(std, np.float64)[:, None, None]
    if len(mean) != image.shape[0]:
        raise ValueError(f"{image.shape[0]} bands but statistics for {len(mean)}; delete {STATS_FILE} to recompute")
    low, width = mean - 2 * std, 4 * std
    scaled = np.where(width > 0, (image - low) / np.where(width > 0, width, 1.0), 0.5)
    return torch.from_numpy(np.clip(scaled, 0.0, 1.0).astype(np.float32))
