"""Image datasets: each item is `(PIL.Image.Image, int)`; each set has `targets`, `classes`, `channels`.

Offline (no internet needed): `FashionMNIST` and `MNIST` after `python -m ssl_platform data
prepare NAME`, `Digits` (bundled with scikit-learn), `ImageFolder` (your own images).
With internet: `CIFAR10`, `CIFAR100`, `STL10` (torchvision downloads them).
"""

from ssl_platform.data.datasets.base import ArrayImages, balanced_subset
from ssl_platform.data.datasets.digits import Digits
from ssl_platform.data.datasets.folder import ImageFolder
from ssl_platform.data.datasets.idx import MNIST, FashionMNIST, IdxError, read_idx, write_idx
from ssl_platform.data.datasets.torchvision_sets import CIFAR10, CIFAR100, STL10

__all__ = [
    "ArrayImages",
    "CIFAR10",
    "CIFAR100",
    "Digits",
    "FashionMNIST",
    "IdxError",
    "ImageFolder",
    "MNIST",
    "STL10",
    "balanced_subset",
    "read_idx",
    "write_idx",
]
