"""CIFAR-10, CIFAR-100 and STL-10 through torchvision, for users with internet access.

These sets are in no package registry, so they cannot be prepared offline; torchvision
downloads them into `<data root>/<name>/` when `download=True`. They return the same
`(PIL image, label)` interface as every other dataset here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ssl_platform.data.datasets.base import ArrayImages, check_split
from ssl_platform.data.root import resolve_root

OFFLINE_ALTERNATIVES = "FashionMNIST, MNIST (`python -m ssl_platform data prepare NAME`) or Digits"


def load_torchvision(
    title: str, cls_name: str, directory: str, root: str | Path | None, download: bool, **kwargs: Any
) -> Any:
    """Build `torchvision.datasets.<cls_name>` under `<root>/<directory>/`, with errors that say what to do.

    Args:
        title: name in messages.
        cls_name: the torchvision class, e.g. "CIFAR10".
        directory: sub-directory of the data root.
        root: the data root (None: `SSL_PLATFORM_DATA` or `./data`).
        download: let torchvision fetch the files (needs internet).
        **kwargs: split arguments for the torchvision class (`train=`, `split=`).

    Returns:
        the torchvision dataset.
    """
    # imported here so that importing the datasets package does not load torchvision
    import torchvision.datasets

    where = resolve_root(root) / directory
    try:
        return getattr(torchvision.datasets, cls_name)(root=str(where), download=download, **kwargs)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        if download:
            raise
        raise FileNotFoundError(
            f"{title} not found or incomplete under {where} ({err}). Pass download=True (in a recipe: "
            f"data.dataset.download=true) to fetch it from the internet, or copy torchvision's extracted "
            f"archive there. Without internet use {OFFLINE_ALTERNATIVES}."
        ) from err
    except OSError as err:  # network errors while downloading
        raise OSError(
            f"downloading {title} into {where} failed ({err}); it needs internet access. "
            f"Without internet use {OFFLINE_ALTERNATIVES}."
        ) from err


def cifar_arrays(
    name: str, split: str, root: str | Path | None, download: bool
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """images [N, 32, 32, 3] uint8, labels [N] and class names of torchvision's "CIFAR10" or "CIFAR100"."""
    check_split(split, ("train", "test"), name)
    tv = load_torchvision(name, name, name.lower(), root, download, train=split == "train")
    return np.asarray(tv.data), np.asarray(tv.targets), list(tv.classes)


class CIFAR10(ArrayImages):
    """CIFAR-10 [0]: 50000 train / 10000 test, 32x32 RGB, 10 classes. Items are `(PIL "RGB", label)`.

    - [0]: Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009.

    Args:
        split: "train" or "test".
        root: the data root; files live in `<root>/cifar10/` (None: `SSL_PLATFORM_DATA` or `./data`).
        download: fetch the archive when missing (needs internet).
        limit: keep a class-balanced subset of this many samples.
        seed: seed of that subset.
    """

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        download: bool = False,
        limit: int | None = None,
        seed: int = 0,
    ):
        super().__init__(*cifar_arrays("CIFAR10", split, root, download), limit=limit, seed=seed)


class CIFAR100(ArrayImages):
    """CIFAR-100 [0]: 50000 train / 10000 test, 32x32 RGB, 100 fine-grained classes.

    - [0]: Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009.

    Args:
        split: "train" or "test".
        root: the data root; files live in `<root>/cifar100/` (None: `SSL_PLATFORM_DATA` or `./data`).
        download: fetch the archive when missing (needs internet).
        limit: keep a class-balanced subset of this many samples.
        seed: seed of that subset.
    """

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        download: bool = False,
        limit: int | None = None,
        seed: int = 0,
    ):
        super().__init__(*cifar_arrays("CIFAR100", split, root, download), limit=limit, seed=seed)


class STL10(ArrayImages):
    """STL-10 [0]: 96x96 RGB, 10 classes; 5000 train, 8000 test and 100000 unlabelled images.

    Items are `(PIL "RGB", label)`, with label -1 for the "unlabeled" split.

    - [0]: Coates et al., An Analysis of Single Layer Networks in Unsupervised Feature Learning, 2011.

    Args:
        split: "train", "test", "unlabeled" or "train+unlabeled".
        root: the data root; files live in `<root>/stl10/` (None: `SSL_PLATFORM_DATA` or `./data`).
        download: fetch the 2.5 GB archive when missing (needs internet).
        limit: keep a class-balanced subset of this many samples (unlabelled ones count as one class).
        seed: seed of that subset.
    """

    SPLITS = ("train", "test", "unlabeled", "train+unlabeled")

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        download: bool = False,
        limit: int | None = None,
        seed: int = 0,
    ):
        check_split(split, self.SPLITS, "STL10")
        tv = load_torchvision("STL10", "STL10", "stl10", root, download, split=split)
        images = np.asarray(tv.data).transpose(0, 2, 3, 1)  # [N, 3, 96, 96] -> [N, 96, 96, 3]
        super().__init__(images, np.asarray(tv.labels), tv.classes, limit=limit, seed=seed)
