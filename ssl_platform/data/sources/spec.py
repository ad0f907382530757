"""What a preparable data set is: how it is fetched, what valid files look like, what to do without it.

Two kinds. A `Source` is an image set kept as the four LeCun idx files (MNIST's layout), checked by
`verify_idx` against its expected shapes and label counts. A `FileSource` is any other set of files
with its own `verify`. `data/prepare.py` fetches either into a temporary directory, checks it, and
installs the files under the data root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssl_platform.data.datasets.idx import IMAGES, LABELS, SPLIT_PREFIX, IdxError, find_idx, read_idx


@dataclass(frozen=True)
class Source:
    """One preparable idx image set: where it comes from and what valid files look like.

    Attributes:
        title: name in messages.
        fetch: (temp dir, remedy text) -> directory holding the four idx files.
        gz: whether the files are kept gzipped (`*-ubyte.gz`) as the source ships them.
        train_counts: [K] expected train label counts, label k at index k.
        test_size: expected number of test samples.
        image_shape: expected (H, W).
        remedy: what the user can do when the source cannot be reached (`{dir}`: the target directory).
    """

    title: str
    fetch: Callable[[Path, str], Path]
    gz: bool
    train_counts: tuple[int, ...]
    test_size: int
    image_shape: tuple[int, int]
    remedy: str


@dataclass(frozen=True)
class FileSource:
    """A data set kept as plain files with its own check (no idx layout).

    Attributes:
        title: name in messages.
        fetch: (temp dir, remedy text) -> directory holding `files`.
        files: the file names, relative paths copied as they are.
        verify: directory -> None when its files are complete and valid, else what is wrong.
        remedy: what the user can do when the source cannot be reached (`{dir}`: the target directory).
    """

    title: str
    fetch: Callable[[Path, str], Path]
    files: tuple[str, ...]
    verify: Callable[[Path], str | None]
    remedy: str


def idx_file_names(gz: bool) -> list[str]:
    """The four idx file names, e.g. `train-images-idx3-ubyte.gz`: train images, labels, test images, labels."""
    suffix = ".gz" if gz else ""
    return [f"{SPLIT_PREFIX[s]}-{kind}{suffix}" for s in ("train", "test") for kind in (IMAGES, LABELS)]


def verify_idx(directory: Path, source: Source) -> str | None:
    """None when `directory` holds a complete, valid copy of `source` (raw or gzipped), else what is wrong."""
    arrays = {}
    for stem in idx_file_names(gz=False):
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
