"""MNIST and Fashion-MNIST from the LeCun idx files that `ssl_platform.data.prepare` puts on disk.

The idx format is a 4-byte magic (two zero bytes, a dtype code, the number of dims), one
big-endian uint32 per dim, then the values in C order. Files may be gzipped (`.gz`).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ssl_platform.data.datasets.base import ArrayImages, check_split
from ssl_platform.data.root import describe_data_root, resolve_root

# idx dtype code -> numpy dtype (multi-byte values are big-endian)
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
IMAGES, LABELS = "images-idx3-ubyte", "labels-idx1-ubyte"


class IdxError(ValueError):
    """An idx file is truncated or not an idx file; the message names the file."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (raw or `.gz`) into an array.

    Args:
        path: the file; a name ending in `.gz` is decompressed.

    Returns:
        the array with the shape and dtype from the file header (native byte order).

    Raises:
        IdxError: bad magic, or a size that does not match the header (truncated file).
    """
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:  # a cut-off or damaged gzip stream
        raise IdxError(f"{path}: damaged gzip data ({err})") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise IdxError(f"{path}: not an idx file (magic bytes {data[:4].hex() or 'missing'})")
    ndim, dtype = data[3], IDX_DTYPES[data[2]]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise IdxError(f"{path}: header cut off ({len(data)} bytes for {ndim} dims)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise IdxError(f"{path}: {len(data)} bytes, but its header {shape} says {expected} (truncated?)")
    return np.frombuffer(data, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as an idx file, gzipped when `path` ends in `.gz` (inverse of `read_idx`)."""
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    array = np.asarray(array)
    if array.dtype not in codes:
        raise ValueError(f"idx cannot hold {array.dtype}; use one of {sorted(str(d) for d in codes)}")
    big_endian = IDX_DTYPES[codes[array.dtype]]
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=big_endian).tobytes())


def find_idx(directory: Path, stem: str) -> Path | None:
    """`directory/stem` or `directory/stem.gz`, whichever exists (raw first), else None."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_split(
    name: str, title: str, split: str, root: str | Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of a prepared idx data set.

    Args:
        name: the prepare name and directory under the data root (`mnist`, `fashion-mnist`).
        title: the name used in messages.
        split: "train" or "test".
        root: the data root (None: `SSL_PLATFORM_DATA` or `./data`).

    Returns:
        images [N, 28, 28] uint8 and labels [N] int64.
    """
    check_split(split, list(SPLIT_PREFIX), title)
    directory = resolve_root(root) / name
    command = f"python -m ssl_platform data prepare {name}"
    paths = []
    for kind in (IMAGES, LABELS):
        stem = f"{SPLIT_PREFIX[split]}-{kind}"
        path = find_idx(directory, stem)
        if path is None:
            raise FileNotFoundError(
                f"{title} not found: {directory / stem}[.gz] is missing. Run `{command}` to put it there, "
                f"or point SSL_PLATFORM_DATA (or root=) at the data root that holds {name}/ "
                f"(now {describe_data_root()})."
            )
        paths.append(path)
    try:
        images, labels = (read_idx(p) for p in paths)
    except IdxError as err:
        raise IdxError(f"{err}. Re-run `{command}` to fetch a fresh copy.") from err
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or len(images) != len(labels):
        raise IdxError(
            f"{paths[0]} ({images.dtype} {images.shape}) and {paths[1]} ({labels.shape}) do not pair up as "
            f"uint8 images and labels. "
            f"Re-run `{command}` to fetch a fresh copy."
        )
    return images, labels.astype(np.int64)


class MNIST(ArrayImages):
    """MNIST handwritten digits [0]: 60000 train / 10000 test, 28x28 grayscale, 10 classes.

    Reads `<root>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`, as written by
    `python -m ssl_platform data prepare mnist`. Items are `(PIL "L" image, label)`.

    - [0]: LeCun et al., Gradient-based learning applied to document recognition, 1998.

    Args:
        split: "train" or "test".
        root: the data root holding `mnist/` (None: `SSL_PLATFORM_DATA` or `./data`).
        limit: keep a class-balanced subset of this many samples (demos, tests).
        seed: seed of that subset.
    """

    CLASSES = tuple(str(digit) for digit in range(10))

    def __init__(
        self, split: str = "train", root: str | Path | None = None, limit: int | None = None, seed: int = 0
    ):
        images, labels = load_idx_split("mnist", "MNIST", split, root)
        super().__init__(images, labels, self.CLASSES, limit=limit, seed=seed)


class FashionMNIST(ArrayImages):
    """Fashion-MNIST [0]: Zalando article photos, 60000 train / 10000 test, 28x28 grayscale, 10 classes.

    Reads `<root>/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`, as written by
    `python -m ssl_platform data prepare fashion-mnist`. Items are `(PIL "L" image, label)`.

    - [0]: Xiao et al., Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
      Algorithms, 2017, https://arxiv.org/abs/1708.07747

    Args:
        split: "train" or "test".
        root: the data root holding `fashion-mnist/` (None: `SSL_PLATFORM_DATA` or `./data`).
        limit: keep a class-balanced subset of this many samples (demos, tests).
        seed: seed of that subset.
    """

    CLASSES = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )

    def __init__(
        self, split: str = "train", root: str | Path | None = None, limit: int | None = None, seed: int = 0
    ):
        images, labels = load_idx_split("fashion-mnist", "Fashion-MNIST", split, root)
        super().__init__(images, labels, self.CLASSES, limit=limit, seed=seed)
