"""What a multispectral tile can be labelled with: land cover from spectral indices, or elevation.

The land-cover classes are derived from the pixels themselves (MNDWI for water, NDVI for vegetation),
a proxy for land cover, not surveyed ground truth. Elevation comes from a DEM stored beside the
scene (`dem/<scene file>`), a target not derived from the pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssl_platform.data.datasets.geotiff import GeoTiffError, pixel_grid, read_geotiff, sample_on_grid
from ssl_platform.data.datasets.sensors import SENSORS

LANDCOVER_CLASSES = ("water", "vegetation", "built-up or bare")
# what MultispectralTiles can give as targets (see tile_target)
TILE_LABELS = ("none", "landcover", "vegetation_fraction", "elevation")
# the float targets among them (the rest are class ids)
REGRESSION_TILE_LABELS = ("vegetation_fraction", "elevation")
# where a scene's elevation model lives, relative to the scene's directory: dem/<scene file name>
DEM_DIR = "dem"
# NDVI above which a land pixel counts as vegetation: the Otsu threshold of the land pixels of the
# Landsat-7 Olinda scene (0.087 on its uint8 DNs, rounded); DNs are not reflectances, so it is a
# scene-specific split, not a physical constant
NDVI_VEGETATION = 0.09


def scene_elevation(scene_path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """`[H, W]` float64 elevation at each pixel of the scene at `scene_path` (`shape` = its H, W), from the
    single-band DEM `<scene dir>/dem/<scene file name>`, resampled by nearest cell (`sample_on_grid`)."""
    scene_path = Path(scene_path)
    dem_path = scene_path.parent / DEM_DIR / scene_path.name
    if not dem_path.is_file():
        raise FileNotFoundError(f"labels='elevation' needs the scene's elevation model at {dem_path} (one band, "
                                f"georeferenced like {scene_path.name}); `python -m ssl_platform data prepare "
                                "landsat7-stars` puts Olinda's there")
    dem = read_geotiff(dem_path)
    if dem.shape[0] != 1:
        raise GeoTiffError(f"{dem_path} has {dem.shape[0]} bands; an elevation model has one")
    return sample_on_grid(dem[0].astype(np.float64), pixel_grid(dem_path), pixel_grid(scene_path), shape,
                          where=str(dem_path))


def landcover_classes(image: np.ndarray, sensor: str) -> np.ndarray:
    """Per-pixel land cover from spectral indices: `[C, H, W]` raw values -> `[H, W]` int64.

    0 water: MNDWI = (green - SWIR1) / (green + SWIR1) > 0 (Xu 2006); 1 vegetation: NDVI =
    (NIR - red) / (NIR + red) > NDVI_VEGETATION; 2 built-up or bare: the rest. These are labels
    *derived from the pixels*, a proxy for land cover, not surveyed ground truth.
    """
    names = SENSORS[sensor].bands
    wanted = {"landsat7": ("B2", "B3", "B4", "B5"), "sentinel2": ("B03", "B04", "B08", "B11")}.get(sensor)
    if wanted is None:
        raise ValueError(f"land-cover labels need green, red, NIR and SWIR bands; sensor {sensor!r} lacks them "
                         f"(use one of ['landsat7', 'sentinel2'])")
    green, red, nir, swir = (image[names.index(b)].astype(np.float64) for b in wanted)
    with np.errstate(divide="ignore", invalid="ignore"):
        mndwi = np.nan_to_num((green - swir) / (green + swir))
        ndvi = np.nan_to_num((nir - red) / (nir + red))
    return np.where(mndwi > 0, 0, np.where(ndvi > NDVI_VEGETATION, 1, 2)).astype(np.int64)


def tile_target(tile: np.ndarray, sensor: str, labels: str) -> int | float:
    """One tile's target from its raw `[C, T, T]` values (`labels` is one of TILE_LABELS).

    "none": -1. "landcover": the majority class of `landcover_classes` (ties go to the lower id).
    "vegetation_fraction": the share of the tile's T² pixels whose class is vegetation, in [0, 1];
    water pixels count in the denominator but never as vegetation (MNDWI is tested first).
    Composition depends on how the pixels are distributed inside the tile, not only on its mean.
    """
    if labels == "none":
        return -1
    if labels == "elevation":
        raise ValueError("elevation is not a function of the tile's pixels: it comes from the scene's DEM "
                         "(scene_elevation), as MultispectralTiles(labels='elevation') reads it")
    counts = np.bincount(landcover_classes(tile, sensor).ravel(), minlength=len(LANDCOVER_CLASSES))
    if labels == "landcover":
        return int(counts.argmax())
    return float(counts[1] / counts.sum())
