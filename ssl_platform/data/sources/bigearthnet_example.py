"""`bigearthnet-example`: the 6 BigEarthNet-S2 example patches of the PyPI wheel `bigearthnet-common`.

One GeoTIFF per band and a `*_labels_metadata.json` per patch folder in
`<data root>/bigearthnet-example/`, with the band statistics (`band_stats.json`) computed once here;
`ssl_platform.data.datasets.multispectral.BigEarthNetPatches` reads them. The wheel is downloaded
without its dependencies and only the example archive inside it is read; nothing is installed.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from ssl_platform.data.datasets.band_stats import STATS_FILE
from ssl_platform.data.datasets.multispectral import BIGEARTHNET_FILE_BANDS, BigEarthNetPatches
from ssl_platform.data.datasets.sensors import SENSORS
from ssl_platform.data.download import DataSourceError, pip_download
from ssl_platform.data.sources.scenes import verify_band_stats
from ssl_platform.data.sources.spec import FileSource

BIGEARTHNET_WHEEL = "bigearthnet-common==2.8.0"
BIGEARTHNET_EXAMPLE_PATCHES = (
    "S2A_MSIL2A_20170613T101031_87_48", "S2A_MSIL2A_20170617T113321_36_85", "S2A_MSIL2A_20170617T113321_4_55",
    "S2A_MSIL2A_20171221T112501_56_35", "S2B_MSIL2A_20170924T93020_69_24", "S2B_MSIL2A_20180204T94161_57_38",
)
BIGEARTHNET_EXAMPLE_FILES = (*(f"{p}/{p}_{b}.tif" for p in BIGEARTHNET_EXAMPLE_PATCHES for b in BIGEARTHNET_FILE_BANDS),
                             *(f"{p}/{p}_labels_metadata.json" for p in BIGEARTHNET_EXAMPLE_PATCHES), STATS_FILE)


def fetch(tmp: Path, remedy: str) -> Path:
    """Directory in `tmp` holding the 6 BigEarthNet-S2 example patches of the `bigearthnet-common` wheel."""
    source = f"PyPI {BIGEARTHNET_WHEEL}"
    wheel = pip_download(BIGEARTHNET_WHEEL, tmp, source, remedy)
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
        raise DataSourceError(f"{source}: {wheel.name} lacks the S2 example patches ({err}). {remedy}") from err
    if target.is_dir():
        BigEarthNetPatches(target)  # computes and stores band_stats.json
    return target


def verify(directory: Path) -> str | None:
    """None when `directory` holds the 6 example patches, readable, with labels and band statistics."""
    missing = [n for n in BIGEARTHNET_EXAMPLE_FILES if not (directory / n).is_file()]
    if missing:
        return f"{len(missing)} files are missing, e.g. {directory / missing[0]}"
    try:
        patches = BigEarthNetPatches(directory)
        patches[0]
    except (ValueError, OSError) as err:
        return str(err)
    return verify_band_stats(directory, len(SENSORS["sentinel2"].bands))


SOURCE = FileSource(
    title="BigEarthNet-S2 example patches",
    fetch=fetch,
    files=BIGEARTHNET_EXAMPLE_FILES,
    verify=verify,
    remedy=(
        "Make PyPI reachable (`pip download --no-deps bigearthnet-common==2.8.0` must work), or download the "
        "wheel by hand, unzip it, extract bigearthnet_common/BigEarthNet-S2-Example.tar.bz2 and copy the 6 patch "
        "folders of BigEarthNet-S2-Example/ into {dir}/ (the dataset computes band_stats.json on first use)."
    ),
)
