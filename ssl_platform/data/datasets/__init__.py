"""Image datasets: each item is `(PIL.Image.Image, int)`; each set has `targets`, `classes`, `channels`.
Tables: `Table` items are `({"x_num": [n_num], "x_cat": [n_cat]}, label)` (see `tabular.py`).

Offline (no internet needed): `FashionMNIST` and `MNIST` after `python -m ssl_platform data
prepare NAME`, `Digits` (bundled with scikit-learn), `ImageFolder` (your own images).
With internet: `CIFAR10`, `CIFAR100`, `STL10` (torchvision downloads them).
Graphs offline: `Molecules` (items `({"graph": Data}, class)`) after `python -m ssl_platform data prepare molecules`;
`KarateClub` and `FashionMNISTKNNGraph` (node-level `NodeGraph`s: items `({"graph": Data}, -1)`, splits
of their nodes for evaluation). Graphs with internet (once): `Planetoid`, `OGBNodeGraph` (node level),
`TUGraphs` (graph level).
Image-text pairs (`pairs.py`, items `({"image": PIL, "text": str}, label)`): `ImageTextPairs` (your
JSONL / CSV manifest), `EmojiPairs` (after `data prepare emoji`), `FashionMNISTCaptions`, `DigitCaptions`.
Tables offline: `Table("breast_cancer" | "wine" | "digits" | "randhie" | "fair")` or your own CSV /
parquet file; the Adult, Higgs and California housing layouts read a file you download.
Shards (`shards.py`): `ShardDataset(source)` reads what `sslp data shard` wrote (any of the sets above)
from a folder, s3://, gs:// or http(s)://, item for item as the source returned it.

A dataset whose items come from separate files or rows may define `sample_source(index) -> str`
(the file, manifest line or table row of item `index`); `collate.TransformedDataset` names it when a
sample cannot be read and in its skip log. `ImageFolder`, `ImageTextPairs`, `Table`, `Molecules`,
`MultispectralTiles`, `BigEarthNetPatches`, `FmowSentinel` and `ShardDataset` have one.
"""

from ssl_platform.data.datasets.base import ArrayImages, balanced_subset
from ssl_platform.data.datasets.digits import Digits
from ssl_platform.data.datasets.folder import ImageFolder
from ssl_platform.data.datasets.graphs import (
    FashionMNISTKNNGraph,
    ImageKNNGraph,
    KarateClub,
    NodeGraph,
    OGBNodeGraph,
    Planetoid,
    TUGraphs,
)
from ssl_platform.data.datasets.idx import MNIST, FashionMNIST, IdxError, read_idx, write_idx
from ssl_platform.data.datasets.molecules import Molecule, Molecules, read_sdf
from ssl_platform.data.datasets.pairs import DigitCaptions, EmojiPairs, FashionMNISTCaptions, ImageTextPairs
from ssl_platform.data.datasets.shards import ShardDataset
from ssl_platform.data.datasets.tabular import Table
from ssl_platform.data.datasets.torchvision_sets import CIFAR10, CIFAR100, STL10

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "MNIST",
    "STL10",
    "ArrayImages",
    "DigitCaptions",
    "Digits",
    "EmojiPairs",
    "FashionMNIST",
    "FashionMNISTCaptions",
    "FashionMNISTKNNGraph",
    "IdxError",
    "ImageFolder",
    "ImageKNNGraph",
    "ImageTextPairs",
    "KarateClub",
    "Molecule",
    "Molecules",
    "NodeGraph",
    "OGBNodeGraph",
    "Planetoid",
    "ShardDataset",
    "TUGraphs",
    "Table",
    "balanced_subset",
    "read_idx",
    "read_sdf",
    "write_idx",
]
