"""Checks shared by the multispectral sources: scenes of the expected shape, statistics for every band."""

from __future__ import annotations

from pathlib import Path

from ssl_platform.data.datasets.band_stats import STATS_FILE, stored_band_stats
from ssl_platform.data.datasets.geotiff import GeoTiffError, read_geotiff


def verify_band_stats(directory: Path, bands: int) -> str | None:
    """None when `directory/band_stats.json` is readable and has a mean and std for each of `bands` bands."""
    try:
        stats = stored_band_stats(directory)
    except (OSError, ValueError) as err:
        return str(err)
    if len(stats["mean"]) != bands or len(stats["std"]) != bands:
        return f"{directory / STATS_FILE} has statistics for {len(stats['mean'])} bands, expected {bands}"
    return None


def verify_scenes(directory: Path, shapes: dict[str, tuple[int, int]], bands: int) -> str | None:
    """None when every scene file of `shapes` (name -> (H, W)) reads as `[bands, H, W]` and the band
    statistics are there, else what is wrong."""
    for name, shape in shapes.items():
        try:
            scene = read_geotiff(directory / name)
        except GeoTiffError as err:
            return str(err)
        if scene.shape != (bands, *shape):
            return f"{directory / name} has shape {scene.shape}, expected {(bands, *shape)}"
    return verify_band_stats(directory, bands)
