"""torch_geometric's files in a data root, checked before torch_geometric unpickles them.

torch_geometric 2.8 reads a data set's `processed/*.pt` with `torch.load(weights_only=True)`, but
falls back to `weights_only=False` when a file names a class outside its allowlist
(`torch_geometric.io.fs.torch_load`), and reads `processed/pre_transform.pt` and `pre_filter.pt` with
`weights_only=False` outright (`Dataset._process`). Planetoid's raw `ind.<name>.*` files are plain
pickles (`torch_geometric.io.planetoid.read_file`). A file planted in any of these places would run
its code when `Planetoid`, `TUGraphs` or `OGBNodeGraph` (`graphs.py`) builds its data set, so they
call these checks first:

- `check_processed`: every `*.pt` of the processed folder must load with `weights_only=True`
  (tensors, plain containers and the classes torch_geometric allowlists when it is imported);
- `check_raw_pickles`: the raw pickles must unpickle with only the globals the published files use.

A refused file raises `UnsafeDataFileError`, naming the file and what to delete to rebuild it.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable
from pathlib import Path

import torch

# the globals of the published Planetoid files (github.com/kimiyoung/planetoid, pickled by Python 2:
# numpy arrays, scipy CSR matrices, a defaultdict of lists) and of the same objects pickled by
# today's numpy / scipy (`numpy._core`, `scipy.sparse._csr`, bytes through `_codecs.encode`)
PLANETOID_GLOBALS = frozenset({
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_matrix"),
    ("collections", "defaultdict"), ("__builtin__", "list"), ("builtins", "list"), ("_codecs", "encode"),
})
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


class UnsafeDataFileError(ValueError):
    """A data file that would need arbitrary code to load; the message names it and what to delete."""


class _AllowlistUnpickler(pickle.Unpickler):
    """Unpickles only the globals in `allowed`: every callable a pickle can call is looked up here."""

    def __init__(self, file, allowed: frozenset[tuple[str, str]]):
        super().__init__(file, encoding="latin1")  # Python 2 numpy pickles hold bytes as latin-1 str
        self.allowed = allowed

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"it names the global {module}.{name}, which such a file never holds")
        return super().find_class(module, name)


def check_processed(directory: str | Path) -> None:
    """Load every `*.pt` in torch_geometric's processed folder `directory` with `weights_only=True`.

    Raises:
        UnsafeDataFileError: a file needs more than tensors, plain containers and torch_geometric's
            allowlisted classes, or cannot be read at all; deleting `directory` makes torch_geometric
            rebuild it from the raw files.
    """
    import torch_geometric  # noqa: F401  (imported for its side effect: it allowlists its classes for weights_only)

    directory = Path(directory)
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.pt")):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a foreign global, or not a torch file at all: neither is loaded
            found = _UNSUPPORTED.search(str(err))
            reason = (f"it names the global {found.group(1)}, which is neither a tensor nor a torch_geometric class, "
                      "and torch_geometric would unpickle it with weights_only=False, which runs any code a planted "
                      "file holds" if found else
                      f"it is not a readable torch file ({' '.join(f'{type(err).__name__}: {err}'.split())[:300]})")
            raise UnsafeDataFileError(f"refusing to load {path}: {reason}. Delete {directory} and torch_geometric "
                                      "rebuilds it from the raw files") from err


def check_raw_pickles(paths: Iterable[str | Path], allowed: frozenset[tuple[str, str]] = PLANETOID_GLOBALS) -> None:
    """Unpickle each existing file of `paths` with only the globals in `allowed` (Planetoid's by default).

    Raises:
        UnsafeDataFileError: a file names another global (its code never runs) or is not a pickle.
    """
    for path in map(Path, paths):
        if not path.is_file():
            continue
        try:
            with open(path, "rb") as f:
                _AllowlistUnpickler(f, allowed).load()
        except Exception as err:  # a foreign global, or not a pickle at all: neither is a file to hand to pickle
            raise UnsafeDataFileError(
                f"refusing to read {path}: {' '.join(str(err).split())[:300]}. torch_geometric unpickles it with no "
                f"restriction, which runs any code a planted file holds; delete it and fetch the original files "
                "again"
            ) from err
