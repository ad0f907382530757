"""`landsat7-stars`: the 6-band Landsat-7 Olinda scene of the Debian package `r-cran-stars`, with its DEM.

`L7_ETMs.tif` (352 x 349, ETM+ bands 1-5 and 7), its band statistics (`band_stats.json`, computed
once here) and the package's elevation model of the same area as `dem/L7_ETMs.tif`, where
`ssl_platform.data.datasets.multispectral.MultispectralTiles` looks for a scene's DEM (the
`elevation` tile target). The .deb is downloaded and unpacked, not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

from ssl_platform.data.datasets.band_stats import STATS_FILE, stored_band_stats
from ssl_platform.data.datasets.geotiff import GeoTiffError, read_geotiff
from ssl_platform.data.datasets.tile_targets import DEM_DIR, scene_elevation
from ssl_platform.data.download import DataSourceError, apt_download, extract_deb
from ssl_platform.data.sources.scenes import verify_scenes
from ssl_platform.data.sources.spec import FileSource

PACKAGE = "r-cran-stars"
# the scene, its elevation model stored as dem/<scene file>, and its band statistics
LANDSAT7_FILES = ("L7_ETMs.tif", f"{DEM_DIR}/L7_ETMs.tif", STATS_FILE)


def fetch(tmp: Path, remedy: str) -> Path:
    """Directory in `tmp` holding `L7_ETMs.tif` and its elevation model `dem/L7_ETMs.tif` (the package's
    `olinda_dem_utm25s.tif`) from the Debian package `r-cran-stars` (extracted, not installed)."""
    tif = extract_deb(apt_download(PACKAGE, tmp, remedy), tmp / "deb", remedy) / "usr/lib/R/site-library/stars/tif"
    for name in ("L7_ETMs.tif", "olinda_dem_utm25s.tif"):
        if not (tif / name).is_file():
            raise DataSourceError(f"Debian package {PACKAGE}: the package has no "
                                  f"{(tif / name).relative_to(tmp / 'deb')}. {remedy}")
    target = tmp / "landsat7-stars"
    target.mkdir()
    os.replace(tif / "L7_ETMs.tif", target / "L7_ETMs.tif")
    # Olinda's elevation model (111 x 111 cells of 90 m, same origin and UTM 25S grid as the scene)
    (target / DEM_DIR).mkdir()
    os.replace(tif / "olinda_dem_utm25s.tif", target / DEM_DIR / "L7_ETMs.tif")
    stored_band_stats(target, [read_geotiff(target / "L7_ETMs.tif")])
    return target


def verify(directory: Path) -> str | None:
    """None when `directory` holds the 6-band 352 x 349 Olinda scene, its band statistics and its
    elevation model (one band, covering the scene)."""
    problem = verify_scenes(directory, {"L7_ETMs.tif": (352, 349)}, 6)
    if problem is None:
        try:
            scene_elevation(directory / "L7_ETMs.tif", (352, 349))
        except (GeoTiffError, FileNotFoundError) as err:
            return str(err)
    return problem


SOURCE = FileSource(
    title="Landsat-7 Olinda scene (r-cran-stars)",
    fetch=fetch,
    files=LANDSAT7_FILES,
    verify=verify,
    remedy=(
        "Make the Debian archive reachable (`apt-get download r-cran-stars` must work; do not apt-get install "
        "it), or extract r-cran-stars_*.deb with `dpkg-deb -x` and copy usr/lib/R/site-library/stars/tif/"
        "L7_ETMs.tif into {dir}/ and olinda_dem_utm25s.tif to {dir}/dem/L7_ETMs.tif (the dataset computes "
        "band_stats.json on first use)."
    ),
)
