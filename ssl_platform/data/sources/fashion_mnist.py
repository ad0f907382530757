"""`fashion-mnist`: Fashion-MNIST from the Debian package `dataset-fashion-mnist`.

The four gzipped LeCun idx files, kept gzipped in `<data root>/fashion-mnist/`, which
`ssl_platform.data.datasets.FashionMNIST` reads. Copied from the installed package when it is there,
else from its .deb, downloaded and unpacked (not installed).
"""

from __future__ import annotations

from pathlib import Path

from ssl_platform.data.download import apt_download, extract_deb
from ssl_platform.data.sources.spec import Source

# where `apt-get install dataset-fashion-mnist` puts the files; copied from when present
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
PACKAGE = "dataset-fashion-mnist"


def fetch(tmp: Path, remedy: str) -> Path:
    """Directory of the Fashion-MNIST .gz idx files: the installed package, or its .deb unpacked in tmp."""
    if SYSTEM_FASHION_MNIST.is_dir():
        return SYSTEM_FASHION_MNIST
    deb = apt_download(PACKAGE, tmp, remedy)
    return extract_deb(deb, tmp / "deb", remedy) / SYSTEM_FASHION_MNIST.relative_to("/")


SOURCE = Source(
    title="Fashion-MNIST",
    fetch=fetch,
    gz=True,
    train_counts=(6000,) * 10,
    test_size=10000,
    image_shape=(28, 28),
    remedy=(
        "Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; it needs the Debian "
        "archive), or copy {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz from "
        "https://github.com/zalandoresearch/fashion-mnist into {dir}/."
    ),
)
