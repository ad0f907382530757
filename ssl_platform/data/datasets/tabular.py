"""Tables: numeric and categorical columns of one row -> `({"x_num", "x_cat"}, label)`.

A `Table` reads one of three kinds of source (`table_sources.py`):

- a bundled table, no download: scikit-learn's `breast_cancer`, `wine` and `digits`, statsmodels'
  `randhie` and `fair` (see `BUNDLED` for each one's target and column types);
- a documented layout of a file you download yourself: `adult`, `higgs`, `california` (see `LAYOUTS`;
  nothing is downloaded here, a missing file fails saying where to get it and where to put it);
- your own `.csv` / `.parquet` file, with a column schema: `columns={"age": "num", "city": "cat"}`,
  `target="price"`, `task="regression"`.

The table is split into train and test once, by `seed` and `test_fraction` (stratified by class for
classification), so `Table(..., split="train")` and `Table(..., split="test")` with the same
arguments are disjoint and together cover every row with a target. Whatever the split, every
statistic comes from the training split only (the test split never leaks into them):

- numeric columns are standardised with the training mean and std (population std; a constant
  column is only centred), and a missing value becomes the training mean, i.e. 0 after scaling;
- categorical columns are coded 1..K by the training split's sorted vocabulary; 0 is reserved for
  missing values and for values never seen in training, so `cat_cardinalities` counts K + 1.

Rows without a target are dropped. `limit` keeps a subset of the split (class-balanced for
classification) after the statistics are fitted on the whole training split.

pandas and scikit-learn are imported by the functions that use them: they are slow to import, and
most runs read no table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_platform.data.datasets.base import balanced_subset, check_split
from ssl_platform.data.datasets.table_sources import Layout, load_table_source

SPLITS = ("train", "test")
TASKS = ("classification", "regression")
KINDS = ("num", "cat")
EXAMPLE = "columns={'age': 'num', 'city': 'cat'}, target='price', task='regression'"
# the largest magnitude a numeric value may have. Beyond it a value is a fill marker or a broken export,
# not a measurement: netCDF / CF fill values are 9.97e36 and 1e20, and no real quantity in an ordinary
# table (money in cents of a year's world GDP is ~1e16) comes near. It also keeps squares finite in
# float32 / bf16 (max 3.4e38, so |x| > 1.8e19 overflows when squared), and a value this far out would
# otherwise set the column's mean and std alone and standardise every other value of it to ~0.
MAX_ABS = 1e18


def _check_schema(frame: Any, columns: dict[str, str] | None, target: str | None, name: str) -> None:
    """Every named column exists, kinds are num/cat, the target is given and is not a feature."""
    have = [str(c) for c in frame.columns]
    if not columns or target is None:
        missing = [k for k, v in (("columns", columns), ("target", target)) if not v]
        raise ValueError(
            f"Table({name!r}): {' and '.join(missing)} {'are' if len(missing) > 1 else 'is'} required for a file: map each feature column to 'num' or 'cat' and "
            f"name the label column, e.g. {EXAMPLE}; the file's columns are {have}"
        )
    for column in [*columns, target]:
        if column not in frame.columns:
            raise ValueError(f"Table({name!r}): column {column!r} is not in the table; its columns are {have}")
    bad = {c: k for c, k in columns.items() if k not in KINDS}
    if bad:
        raise ValueError(f"Table({name!r}): column kinds must be 'num' or 'cat', got {bad}; e.g. {EXAMPLE}")
    if target in columns:
        raise ValueError(f"Table({name!r}): the target {target!r} is also listed in columns; remove it there")


def _refuse_extreme(values: np.ndarray, what: str, name: str, file_rows: np.ndarray) -> None:
    """Raise naming the first row whose value is ±inf or beyond ±MAX_ABS; NaN (missing) is left alone.

    Args:
        values: [N] float64, one per row.
        what: the column, for the message ("numeric column 'age'").
        file_rows: [N] each value's 0-based data row in the file (header not counted).
    """
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(np.isinf(values) | (np.abs(values) > MAX_ABS))
    if len(bad):
        row, value = int(file_rows[bad[0]]), float(values[bad[0]])
        raise ValueError(
            f"Table({name!r}): {what} holds {value:g} in row {row} (0-based data row of the file, header not "
            f"counted; {len(bad)} such row{'s' if len(bad) > 1 else ''}); inf and values beyond ±{MAX_ABS:g} are "
            "fill markers or broken exports, not measurements: fix or drop those rows, or leave the cells empty "
            "(a missing feature becomes the training mean, a row without a target is dropped)"
        )


def _labels(values: Any, task: str, classes: dict[Any, str] | None, name: str,
            file_rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Targets -> ([N] int64 class ids and class names) or ([N] float32 and [])."""
    import pandas as pd

    if task == "regression":
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.isna().any():
            raise ValueError(f"Table({name!r}): regression target {values.name!r} has non-numeric values, e.g. "
                             f"{values[numbers.isna()].iloc[0]!r}; use task='classification'")
        _refuse_extreme(numbers.to_numpy(np.float64), f"regression target {values.name!r}", name, file_rows)
        return numbers.to_numpy(np.float32), []
    if classes is None:
        classes = {v: str(v) for v in sorted(values.unique())}
    ids = values.map({value: i for i, value in enumerate(classes)})
    if ids.isna().any():
        unexpected = sorted(values[ids.isna()].astype(str).unique())[:5]
        raise ValueError(
            f"Table({name!r}): target values {unexpected} are not among the classes {list(classes)}"
        )
    return ids.to_numpy(np.int64), list(classes.values())


def _split_rows(
    labels: np.ndarray, task: str, test_fraction: float, seed: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test row indices; stratified by class for classification."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"Table({name!r}): test_fraction must be in (0, 1), got {test_fraction}")
    stratify = labels if task == "classification" else None
    try:
        train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, stratify=stratify,
                                       random_state=seed, shuffle=True)
    except ValueError as err:  # a class with a single row cannot be stratified
        raise ValueError(
            f"Table({name!r}): cannot split {len(labels)} rows into train and test: {err}"
        ) from err
    return np.sort(train), np.sort(test)


def _numeric(frame: Any, columns: list[str], name: str, file_rows: np.ndarray) -> np.ndarray:
    """[N, n_num] float64, NaN where missing; a non-numeric entry, inf, or a magnitude beyond MAX_ABS is an
    error naming its column and row (`file_rows`: [N] each row's 0-based data row in the file)."""
    import pandas as pd
    from pandas.api.types import is_bool_dtype

    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        raw = frame[column]
        numbers = pd.to_numeric(raw.astype("float64") if is_bool_dtype(raw.dtype) else raw, errors="coerce")
        wrong = numbers.isna() & raw.notna()
        if wrong.any():
            raise ValueError(f"Table({name!r}): numeric column {column!r} holds {raw[wrong].iloc[0]!r}; "
                             f"declare it 'cat' in columns or clean the file")
        out[:, j] = numbers.to_numpy(np.float64)
        _refuse_extreme(out[:, j], f"numeric column {column!r}", name, file_rows)
    return out


def _category(value: Any) -> str:
    """A category's name; integral floats print as integers, so 2, 2.0 and "2" are one category."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _categorical(frame: Any, columns: list[str], train: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
    """[N, n_cat] int64 codes by the training rows' sorted vocabulary (0: missing or unseen), and the
    vocabularies."""
    import pandas as pd

    codes, vocabularies = np.zeros((len(frame), len(columns)), dtype=np.int64), []
    for j, column in enumerate(columns):
        values = frame[column].map(_category, na_action="ignore")  # missing stays missing
        vocabulary = sorted(values.iloc[train].dropna().unique())
        codes[:, j] = pd.Index(vocabulary, dtype=object).get_indexer(values) + 1  # -1 (unknown, missing) -> 0
        vocabularies.append(vocabulary)
    return codes, vocabularies


class Table:
    """One split of a table: items `({"x_num": [n_num] float32, "x_cat": [n_cat] int64}, label)`.

    See the module docstring for sources, splitting and the train-only statistics.

    Args:
        source: a bundled table (`BUNDLED`: breast_cancer, wine, digits, randhie, fair), a layout
            (`LAYOUTS`: adult, higgs, california; the file from `path` or the data root), or a path to
            a .csv / .parquet file.
        split: "train" or "test".
        root: data root of the layouts' files (default `$SSL_PLATFORM_DATA`, else ./data).
        columns: feature column -> "num" | "cat"; required for a file, overrides a named table's.
        target: the label column; required for a file, overrides a named table's.
        task: "classification" | "regression"; for a file with a numeric target it must be given.
        path: the downloaded file of a layout (adult, higgs, california).
        test_fraction: share of rows (of every class, for classification) in the test split.
        seed: seed of the split and of the `limit` subset.
        limit: keep this many rows of the split (class-balanced for classification).

    Attributes:
        x_num: [N, n_num] float32, x_cat: [N, n_cat] int64, targets: [N] int64 class ids or float32.
        classes (names, [] for regression), task, num_columns, cat_columns, cat_cardinalities (with
        the unknown slot 0), num_mean / num_std (training statistics), cat_vocab (training
        vocabularies; code i is cat_vocab[j][i - 1]), rows (each item's row in the table, once rows
        without a target are dropped), file_rows (each item's 0-based data row in the file).

    Numeric values (features and a regression target) must be finite and within ±`MAX_ABS`; an inf or
    a fill marker such as 1e20 fails here, naming the column and row, instead of ending as a NaN loss.
    """

    def __init__(
        self,
        source: str,
        split: str = "train",
        root: str | Path | None = None,
        columns: dict[str, str] | None = None,
        target: str | None = None,
        task: str | None = None,
        path: str | Path | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
        limit: int | None = None,
    ):
        self.split = check_split(split, SPLITS, "Table")
        frame, layout, name = load_table_source(str(source), path, root)
        self.source = name
        columns = dict(columns) if columns is not None else (dict(layout.columns) if layout else None)
        target = target if target is not None else (layout.target if layout else None)
        _check_schema(frame, columns, target, name)
        self.task = self._task(frame[target], task, layout, target, name)
        present = np.flatnonzero(frame[target].notna().to_numpy())  # [N] data rows of the file that have a target
        frame = frame.iloc[present].reset_index(drop=True)
        own = layout is not None and target == layout.target and self.task == layout.task
        labels, self.classes = _labels(frame[target], self.task, layout.classes if own else None, name, present)
        train, test = _split_rows(labels, self.task, test_fraction, seed, name)
        rows = train if split == "train" else test
        self.target = target
        self.num_columns = [c for c, kind in columns.items() if kind == "num"]
        self.cat_columns = [c for c, kind in columns.items() if kind == "cat"]

        x_num = _numeric(frame, self.num_columns, name, present)  # [N, n_num], NaN where missing
        with np.errstate(all="ignore"):  # an all-missing training column gives NaN statistics, handled below
            mean, std = np.nanmean(x_num[train], axis=0), np.nanstd(x_num[train], axis=0)
        mean, std = np.nan_to_num(mean), np.where(np.isfinite(std) & (std > 0), std, 1.0)
        x_num = np.nan_to_num((x_num[rows] - mean) / std)  # a missing value is the train mean: 0
        x_cat, self.cat_vocab = _categorical(frame, self.cat_columns, train)
        self.num_mean, self.num_std = mean, std
        self.cat_cardinalities = [len(v) + 1 for v in self.cat_vocab]

        # classification: class-balanced; regression: one "class", i.e. a plain random subset
        groups = labels[rows] if self.task == "classification" else np.zeros(len(rows))
        keep = balanced_subset(groups, limit, seed)
        self.rows = rows[keep]
        self.file_rows = present[self.rows]
        self.x_num = torch.from_numpy(x_num[keep].astype(np.float32))  # [N, n_num]
        self.x_cat = torch.from_numpy(x_cat[self.rows])  # [N, n_cat]
        self.targets = labels[self.rows]

    @staticmethod
    def _task(values: Any, task: str | None, layout: Layout | None, target: str, name: str) -> str:
        if task is None and layout is not None and target == layout.target:
            task = layout.task
        if task is None:
            from pandas.api.types import is_bool_dtype, is_numeric_dtype

            if is_numeric_dtype(values.dtype) and not is_bool_dtype(values.dtype):
                raise ValueError(f"Table({name!r}): target {target!r} is numeric; say what to predict with "
                                 f"task='classification' (class ids) or task='regression'")
            task = "classification"
        if task not in TASKS:
            raise ValueError(f"Table({name!r}): task must be one of {list(TASKS)}, got {task!r}")
        return task

    def schema(self) -> dict[str, Any]:
        """The tabular backbone's constructor kwargs for this table: num_numeric, cat_cardinalities."""
        return {"num_numeric": len(self.num_columns), "cat_cardinalities": list(self.cat_cardinalities)}

    def __len__(self) -> int:
        return len(self.targets)

    def sample_source(self, index: int) -> str:
        """Item `index`'s row in the file (named by `TransformedDataset`'s bad-sample errors and skip log)."""
        return f"{self.source} row {self.file_rows[index]}"

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], int | float]:
        label = self.targets[index]
        return {"x_num": self.x_num[index], "x_cat": self.x_cat[index]}, label.item()

    def __repr__(self) -> str:
        kind = f"{len(self.classes)} classes" if self.task == "classification" else "regression"
        return (f"Table({self.source!r}, split={self.split!r}, n={len(self)}, target={self.target!r}, {kind}, "
                f"num={len(self.num_columns)}, cat={len(self.cat_columns)} {self.cat_cardinalities})")
