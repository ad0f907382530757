"""No pickle from data files: a planted pickle in a data root is refused before anything unpickles it.

Each payload, when unpickled, touches a marker file (a stand-in for any code a planted file could
run); each test asserts the refusal and that the marker does not exist, and then that the same file
does run its payload when read the unguarded way, so the payload is known to be live.
"""

from __future__ import annotations

import collections
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ssl_platform.data.datasets import EmojiPairs
from ssl_platform.data.datasets.graph_files import UnsafeDataFileError, check_raw_pickles
from ssl_platform.data.datasets.graphs import Planetoid, TUGraphs


class Touch:
    """Unpickling this calls `Path(marker).touch()`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


# ---- numpy: np.load(allow_pickle=False)


def test_emoji_npz_with_pickled_objects_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    directory = tmp_path / "emoji"
    directory.mkdir()
    np.savez(directory / "emoji.npz", images=np.array([Touch(marker)], dtype=object), names=np.array(["x"]),
             labels=np.zeros(1, np.int64), classes=np.array(["c"]), test=np.zeros(1, bool))
    (directory / "wordpiece.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"emoji.npz is unreadable \(Object arrays cannot be loaded when "
                                                r"allow_pickle=False\).*data prepare emoji"):
        EmojiPairs(root=tmp_path)
    assert not marker.exists()
    np.load(directory / "emoji.npz", allow_pickle=True)["images"]  # the unguarded read runs it
    assert marker.exists()


# ---- torch_geometric processed files: torch.load(weights_only=True) first


def write_tu(raw: Path, name: str, count: int = 12) -> None:
    """TUDataset's text layout (1-based node ids): paths of 3-5 nodes, labelled by parity."""
    raw.mkdir(parents=True)
    edges, indicator, labels, offset = [], [], [], 1
    for k in range(count):
        n = 3 + k % 3
        indicator += [k + 1] * n
        pairs = [(offset + i, offset + i + 1) for i in range(n - 1)]
        edges += pairs + [(b, a) for a, b in pairs]
        labels.append(k % 2)
        offset += n
    (raw / f"{name}_A.txt").write_text("".join(f"{a}, {b}\n" for a, b in edges))
    (raw / f"{name}_graph_indicator.txt").write_text("".join(f"{i}\n" for i in indicator))
    (raw / f"{name}_graph_labels.txt").write_text("".join(f"{y}\n" for y in labels))


@pytest.fixture
def tu_root(tmp_path):
    """A TUDataset root processed once by torch_geometric (offline: the raw files are written here)."""
    write_tu(tmp_path / "tudataset" / "TOY" / "raw", "TOY")
    TUGraphs("TOY", split="all", root=tmp_path)
    processed = tmp_path / "tudataset" / "TOY" / "processed"
    assert sorted(p.name for p in processed.iterdir()) == ["data.pt", "pre_filter.pt", "pre_transform.pt"]
    return tmp_path


def test_legitimately_processed_files_pass_the_check(tu_root):
    # the second construction reads the processed files, each checked with weights_only=True first
    again = TUGraphs("TOY", split="all", root=tu_root)
    assert len(again) == 12 and sorted(again.targets.tolist()) == [0] * 6 + [1] * 6


@pytest.mark.parametrize("file", ["data.pt", "pre_transform.pt"])
def test_processed_file_with_a_code_payload_is_refused(tu_root, file):
    from torch_geometric.datasets import TUDataset

    marker = tu_root / "MARKER"
    processed = tu_root / "tudataset" / "TOY" / "processed"
    torch.save(Touch(marker), processed / file)
    with pytest.raises(UnsafeDataFileError, match=rf"refusing to load {processed / file}: it names the global "
                                                  rf".*Delete {processed} and torch_geometric rebuilds it"):
        TUGraphs("TOY", split="all", root=tu_root)
    assert not marker.exists()
    # torch_geometric itself falls back to weights_only=False (data.pt) or never asks (pre_transform.pt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its warnings about the fallback and a changed pre_transform
        if file == "data.pt":
            with pytest.raises(RuntimeError, match="older version of PyG"):  # what the payload returned is no data
                TUDataset(str(tu_root / "tudataset"), "TOY")
        else:
            TUDataset(str(tu_root / "tudataset"), "TOY")  # pre_transform.pt is only compared: a warning
    assert marker.exists()


def test_unreadable_processed_file_is_refused(tu_root):
    processed = tu_root / "tudataset" / "TOY" / "processed"
    (processed / "data.pt").write_bytes(b"not a torch file")
    with pytest.raises(UnsafeDataFileError, match=rf"refusing to load {processed / 'data.pt'}: it is not a readable torch file .*Delete {processed}"):
        TUGraphs("TOY", split="all", root=tu_root)


# ---- Planetoid's raw files are pickles: unpickled with an allowlist first


def write_planetoid(raw: Path, nodes: int = 520, labelled: int = 4, tested: int = 4) -> None:
    """Planetoid's raw layout for Cora: sparse features, one-hot labels, a defaultdict adjacency, test ids.

    The public split takes 500 validation nodes after the labelled ones, so `ally` needs 500 more.
    """
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    known = nodes - tested
    feats = sp.csr_matrix(rng.random((nodes, 3)) < 0.5, dtype=np.float32)
    onehot = np.eye(2, dtype=np.int64)[np.arange(nodes) % 2]
    graph = collections.defaultdict(list, {i: [(i + 1) % nodes, (i - 1) % nodes] for i in range(nodes)})
    parts = {"x": feats[:labelled], "allx": feats[:known], "tx": feats[known:], "y": onehot[:labelled],
             "ally": onehot[:known], "ty": onehot[known:], "graph": graph}
    for part, value in parts.items():
        (raw / f"ind.cora.{part}").write_bytes(pickle.dumps(value, protocol=2))
    (raw / "ind.cora.test.index").write_text("".join(f"{i}\n" for i in range(known, nodes)))


def test_planetoid_raw_pickles_of_arrays_and_matrices_pass(tmp_path):
    write_planetoid(tmp_path / "planetoid" / "Cora" / "raw")
    graph = Planetoid("Cora", root=tmp_path)
    assert graph.graph.num_nodes == 520 and len(Planetoid("Cora", split="train", root=tmp_path).nodes) == 4


def test_planetoid_raw_pickle_with_a_code_payload_is_refused(tmp_path):
    from torch_geometric.io.planetoid import read_file

    marker = tmp_path / "MARKER"
    raw = tmp_path / "planetoid" / "Cora" / "raw"
    write_planetoid(raw)
    (raw / "ind.cora.x").write_bytes(pickle.dumps(Touch(marker), protocol=2))
    with pytest.raises(UnsafeDataFileError, match=rf"refusing to read {raw / 'ind.cora.x'}: it names the global "
                                                  r"[\w.]+, which such a file never holds"):
        Planetoid("Cora", root=tmp_path)
    assert not marker.exists()
    with pytest.raises(TypeError, match="got NoneType"):  # torch_geometric's reader unpickles it unrestricted
        read_file(str(raw), "cora", "x")
    assert marker.exists()


def test_raw_pickle_check_refuses_a_file_that_is_not_a_pickle(tmp_path):
    (tmp_path / "ind.cora.x").write_bytes(b"\x00junk")
    with pytest.raises(UnsafeDataFileError, match="refusing to read .*ind.cora.x"):
        check_raw_pickles([tmp_path / "ind.cora.x", tmp_path / "absent"])
