"""Images from a directory: one subdirectory per class, or unlabelled images straight in the root.

The unlabelled layout is how custom pretraining data usually arrives: nothing here asks
for labels, a class count or a validation split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ssl_platform.data.datasets.base import balanced_subset
from ssl_platform.data.root import resolve_root
from ssl_platform.data.transforms.device_inputs import EncodedImage

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MODES = {1: "L", 3: "RGB"}
LAYOUT_HELP = (
    "pass root=<a directory holding one subdirectory of images per class (labelled), "
    "or the images themselves (unlabelled)>, e.g. data.dataset.root=/path/to/images in a recipe"
)


def _images_in(directory: Path, extensions: Sequence[str], recursive: bool) -> list[Path]:
    """Sorted image files in `directory` (and below when `recursive`), skipping hidden ones."""
    files = directory.rglob("*") if recursive else directory.iterdir()
    # hidden anywhere below `directory` (.ipynb_checkpoints/, ._macos_resource.png) is not data
    visible = (p for p in files if not any(part.startswith(".") for part in p.relative_to(directory).parts))
    return sorted(p for p in visible if p.suffix.lower() in extensions and p.is_file())


def scan_folder(root: Path, extensions: Sequence[str]) -> tuple[list[Path], list[int], list[str]]:
    """Find the images under `root` and their labels.

    Returns:
        image paths [N], labels [N] (sorted subdirectory index, or -1 when the images sit
        directly in `root`), and the class names (sorted subdirectory names; [] when unlabelled).
    """
    if not root.is_dir():
        raise FileNotFoundError(f"ImageFolder: {root} is not a directory; {LAYOUT_HELP}")
    loose = _images_in(root, extensions, recursive=False)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = {d.name: _images_in(d, extensions, recursive=True) for d in subdirs}
    classes = [name for name, files in per_class.items() if files]
    if loose and classes:
        raise ValueError(
            f"ImageFolder: {root} holds images directly and in the subdirectories {classes[:5]}; put every "
            f"image in a class subdirectory (labelled) or all of them directly in {root} (unlabelled)"
        )
    if loose:
        return loose, [-1] * len(loose), []
    if not classes:
        raise FileNotFoundError(
            f"ImageFolder: no images with extensions {list(extensions)} in {root} or its subdirectories; "
            f"{LAYOUT_HELP}"
        )
    empty = [name for name, files in per_class.items() if not files]
    if empty:
        raise ValueError(
            f"ImageFolder: class subdirectories {empty} of {root} hold no images; remove them or add images "
            f"(labels are the sorted subdirectory index, so an empty one would shift them)"
        )
    paths = [p for name in classes for p in per_class[name]]
    labels = [label for label, name in enumerate(classes) for _ in per_class[name]]
    return paths, labels, classes


class ImageFolder:
    """Image files under `root`, labelled by class subdirectory or unlabelled.

    Layouts:
        root/<class>/**/<image>: labelled; label = index of <class> in the sorted subdirectory names.
        root/<image>: unlabelled; every target is -1 and `classes` is [].

    Items are `(PIL image in mode "RGB" or "L" per `channels`, label)`. An image that cannot
    be decoded raises an error naming its path: a silently skipped file would change the data.

    With `encoded` (set by `sslp pretrain` for `data.views_on: device` on a GPU) items are
    `(EncodedImage, label)`: the file's bytes and the size from its header, not decoded: the training
    device decodes the batch (`torchvision.io.decode_jpeg` on CUDA), and the workers only read files.

    Args:
        root: the directory (see the layouts).
        extensions: file suffixes that count as images (case-insensitive).
        channels: 3 (convert to RGB) or 1 (convert to L).
        limit: keep a class-balanced subset of this many images.
        seed: seed of that subset.
        encoded: items hold the undecoded file (see above).
    """

    def __init__(
        self,
        root: str | Path,
        extensions: Sequence[str] = EXTENSIONS,
        channels: int = 3,
        limit: int | None = None,
        seed: int = 0,
        encoded: bool = False,
    ):
        if channels not in MODES:
            raise ValueError(f"ImageFolder: channels must be one of {list(MODES)}, got {channels}")
        self.root = resolve_root(root)  # relative: under the data root, then the working directory (data/root.py)
        self.channels, self.encoded = channels, encoded
        paths, labels, self.classes = scan_folder(self.root, tuple(e.lower() for e in extensions))
        keep = balanced_subset(np.asarray(labels), limit, seed)
        # a numpy string array, not a list of Paths: DataLoader workers would otherwise copy every
        # object's page on access (reference counting defeats copy-on-write)
        self.paths = np.array([str(p) for p in paths])[keep]
        self.targets = np.asarray(labels, dtype=np.int64)[keep]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path = str(self.paths[index])
        if self.encoded:
            return self._encoded(path), int(self.targets[index])
        try:
            with Image.open(path) as image:
                image = image.convert(MODES[self.channels])  # convert() decodes, so damage shows up here
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            raise OSError(f"ImageFolder: cannot read image {path} ({err}); fix or remove the file") from err
        return image, int(self.targets[index])

    def _encoded(self, path: str) -> EncodedImage:
        try:
            with open(path, "rb") as file:
                data = file.read()
            with Image.open(path) as image:  # reads the header only: the size and the format
                size, jpeg = image.size, image.format == "JPEG"
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            raise OSError(f"ImageFolder: cannot read image {path} ({err}); fix or remove the file") from err
        return EncodedImage(data, size, jpeg, path)

    def sample_source(self, index: int) -> str:
        """The image file of item `index` (named by `TransformedDataset`'s bad-sample errors and skip log)."""
        return str(self.paths[index])

    def __repr__(self) -> str:
        return f"ImageFolder(root={str(self.root)!r}, n={len(self)}, classes={len(self.classes)})"
