"""Table: the bundled tables against their sources, train-only statistics (no leakage), categorical codes
with an unknown slot, CSV / parquet files with a schema, the layouts, clear errors, the split, batches."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch
from sklearn import datasets as skdatasets
from torch.utils.data import DataLoader

from ssl_platform.data.collate import TransformedDataset, collate
from ssl_platform.data.datasets import Table
from ssl_platform.data.datasets.table_sources import LAYOUTS

# (rows, numeric columns, categorical columns, classes or None for regression)
BUNDLED = {
    "breast_cancer": (569, 30, 0, ["malignant", "benign"]),
    "wine": (178, 13, 0, ["class_0", "class_1", "class_2"]),
    "digits": (1797, 64, 0, [str(d) for d in range(10)]),
    "randhie": (20190, 5, 4, None),
    "fair": (6366, 4, 4, ["no", "yes"]),
}


def standardised_by_hand(raw: np.ndarray, train_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The reference: population mean and std of the training rows, constant columns only centred."""
    mean, std = raw[train_rows].mean(0), raw[train_rows].std(0)
    return (raw[rows] - mean) / np.where(std > 0, std, 1.0)


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_tables_match_their_sources(name):
    n, n_num, n_cat, classes = BUNDLED[name]
    train, test = Table(name), Table(name, split="test")
    assert len(train) + len(test) == n and len(test) == math.ceil(0.2 * n)  # sklearn rounds test up
    assert set(train.rows).isdisjoint(test.rows) and len(set(train.rows) | set(test.rows)) == n
    assert (len(train.num_columns), len(train.cat_columns)) == (n_num, n_cat)
    assert train.schema() == {"num_numeric": n_num, "cat_cardinalities": train.cat_cardinalities}
    assert train.x_num.shape == (len(train), n_num) and train.x_num.dtype == torch.float32
    assert train.x_cat.shape == (len(train), n_cat) and train.x_cat.dtype == torch.int64
    if classes is None:
        assert train.task == "regression" and train.classes == [] and train.targets.dtype == np.float32
    else:
        assert train.task == "classification" and train.classes == classes and train.targets.dtype == np.int64
    if name in ("breast_cancer", "wine", "digits"):
        bunch = getattr(skdatasets, f"load_{name}")()
        assert train.num_columns == [str(c) for c in bunch.feature_names]
        for part in (train, test):  # both splits scaled with the training rows' statistics
            expected = standardised_by_hand(bunch.data, train.rows, part.rows)
            np.testing.assert_allclose(part.x_num.numpy(), expected, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(part.targets, bunch.target[part.rows])
    else:
        frame = getattr(sm.datasets, name).load_pandas().data
        assert len(frame) == n
        if name == "randhie":
            np.testing.assert_array_equal(train.targets, frame["mdvis"].to_numpy()[train.rows])
            assert train.cat_columns == ["idp", "hlthg", "hlthf", "hlthp"] and train.cat_cardinalities == [3] * 4
            # a 0/1 indicator codes as 1 (value 0) and 2 (value 1); 0 stays the unknown slot
            np.testing.assert_array_equal(train.x_cat[:, 0].numpy(), frame["idp"].to_numpy()[train.rows] + 1)
        else:
            np.testing.assert_array_equal(train.targets, (frame["affairs"].to_numpy()[train.rows] > 0).astype(int))
            assert "affairs" not in train.num_columns + train.cat_columns  # the outcome is never a feature
            assert train.cat_vocab[2] == ["1", "2", "3", "4", "5", "6"]  # occupation codes 1..6
            np.testing.assert_array_equal(train.x_cat[:, 2].numpy(), frame["occupation"].to_numpy()[train.rows])
        raw = frame[train.num_columns].to_numpy(np.float64)
        np.testing.assert_allclose(test.x_num.numpy(), standardised_by_hand(raw, train.rows, test.rows),
                                   rtol=1e-5, atol=1e-5)


def write_csv(path, n=60, seed=0):
    """A mixed-type table: float and int numeric columns, string and int categories, a string label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "height": rng.normal(170, 10, n),
        "rooms": rng.integers(1, 6, n),
        "city": rng.choice(["paris", "rome", "oslo"], n),
        "floor": rng.integers(0, 3, n),
        "label": rng.choice(["cheap", "dear"], n),
        "price": rng.normal(5, 2, n),
    })
    frame.to_csv(path, index=False)
    return frame


SCHEMA = {"height": "num", "rooms": "num", "city": "cat", "floor": "cat"}


def test_test_split_uses_training_statistics_and_test_values_never_leak_in(tmp_path):
    frame = write_csv(tmp_path / "t.csv")
    kw = {"columns": SCHEMA, "target": "label", "seed": 3}
    train, test = Table(str(tmp_path / "t.csv"), **kw), Table(str(tmp_path / "t.csv"), split="test", **kw)
    raw = frame[["height", "rooms"]].to_numpy(np.float64)
    np.testing.assert_allclose(train.num_mean, raw[train.rows].mean(0))
    np.testing.assert_allclose(train.num_std, raw[train.rows].std(0))
    np.testing.assert_allclose(test.x_num.numpy(), (raw[test.rows] - train.num_mean) / train.num_std, rtol=1e-6)
    # the test rows' own statistics are not used: they are not zero-mean unit-std
    assert not np.allclose(test.x_num.numpy().mean(0), 0, atol=1e-3)

    # leakage check: make the test rows absurd (and add unseen categories); train is unchanged
    frame.loc[test.rows, "height"] = 1e6
    frame.loc[test.rows, "city"] = "atlantis"
    frame.to_csv(tmp_path / "t.csv", index=False)
    train2, test2 = Table(str(tmp_path / "t.csv"), **kw), Table(str(tmp_path / "t.csv"), split="test", **kw)
    assert torch.equal(train2.x_num, train.x_num) and torch.equal(train2.x_cat, train.x_cat)
    np.testing.assert_array_equal(train2.num_mean, train.num_mean)
    assert train2.cat_vocab == train.cat_vocab and train2.cat_cardinalities == train.cat_cardinalities
    np.testing.assert_allclose(test2.x_num[:, 0].numpy(), (1e6 - train.num_mean[0]) / train.num_std[0], rtol=1e-6)
    assert (test2.x_cat[:, 0] == 0).all()  # "atlantis" never occurs in train: the unknown slot


def test_categories_code_by_the_training_vocabulary_with_zero_for_unknown_and_missing(tmp_path):
    frame = write_csv(tmp_path / "t.csv", n=80)
    kw = {"columns": SCHEMA, "target": "label"}
    test_rows = Table(str(tmp_path / "t.csv"), split="test", **kw).rows
    frame["city"] = frame["city"].astype(object)
    frame.loc[test_rows[:3], "city"] = "lima"  # only in test
    frame.loc[[0, 1], "city"] = np.nan  # missing
    frame.loc[[2], "height"] = np.nan
    frame.to_csv(tmp_path / "t.csv", index=False)
    train, test = Table(str(tmp_path / "t.csv"), **kw), Table(str(tmp_path / "t.csv"), split="test", **kw)
    assert train.cat_vocab == [["oslo", "paris", "rome"], ["0", "1", "2"]]
    assert train.cat_cardinalities == [4, 4]  # three cities + unknown, three floors + unknown
    for part in (train, test):
        cities = frame["city"].to_numpy()[part.rows]
        expected = [{"oslo": 1, "paris": 2, "rome": 3}.get(c, 0) for c in cities]
        assert part.x_cat[:, 0].tolist() == expected
        np.testing.assert_array_equal(part.x_cat[:, 1].numpy(), frame["floor"].to_numpy()[part.rows] + 1)
    assert (test.x_cat[np.isin(test.rows, test_rows[:3]), 0] == 0).all()
    # a missing number is the training mean (0 once standardised); the mean ignores it
    both = {**dict(zip(train.rows, train.x_num[:, 0])), **dict(zip(test.rows, test.x_num[:, 0]))}
    assert both[2] == 0.0
    heights = frame["height"].to_numpy()
    assert train.num_mean[0] == pytest.approx(np.nanmean(heights[train.rows]))


def test_csv_and_parquet_give_the_same_table(tmp_path):
    pytest.importorskip("pyarrow")
    frame = write_csv(tmp_path / "t.csv")
    frame.to_parquet(tmp_path / "t.parquet")
    kw = {"columns": SCHEMA, "target": "price", "task": "regression"}
    for split in ("train", "test"):
        a, b = Table(str(tmp_path / "t.csv"), split=split, **kw), Table(str(tmp_path / "t.parquet"), split=split, **kw)
        assert torch.equal(a.x_cat, b.x_cat) and torch.allclose(a.x_num, b.x_num)
        np.testing.assert_array_equal(a.targets, b.targets)
        np.testing.assert_allclose(a.targets, frame["price"].to_numpy(np.float32)[a.rows])
        sample, label = b[0]
        assert set(sample) == {"x_num", "x_cat"} and isinstance(label, float) and a.task == "regression"


def test_parquet_without_an_engine_says_to_install_pyarrow(tmp_path, monkeypatch):
    (tmp_path / "t.parquet").write_bytes(b"PAR1")

    def no_engine(*args, **kwargs):
        raise ImportError("Unable to find a usable engine")

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        Table(str(tmp_path / "t.parquet"), columns={"a": "num"}, target="b")


def test_string_targets_are_classes_and_numeric_targets_need_a_task(tmp_path):
    write_csv(tmp_path / "t.csv")
    table = Table(str(tmp_path / "t.csv"), columns=SCHEMA, target="label")
    assert table.task == "classification" and table.classes == ["cheap", "dear"]
    assert isinstance(table[0][1], int)
    with pytest.raises(ValueError, match=r"target 'price' is numeric; .*task='classification'.*task='regression'"):
        Table(str(tmp_path / "t.csv"), columns=SCHEMA, target="price")
    by_id = Table(str(tmp_path / "t.csv"), columns={"height": "num"}, target="rooms", task="classification")
    assert by_id.classes == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, ValueError, (r"columns and target are required for a file.*e\.g\. columns=\{'age': 'num'.*"
                         r"the file's columns are \['height', 'rooms', 'city'")),
        ({"columns": SCHEMA}, ValueError, r"target is required for a file"),
        ({"target": "label"}, ValueError, r"columns is required for a file"),
        ({"columns": {**SCHEMA, "colour": "cat"}, "target": "label"}, ValueError,
         r"column 'colour' is not in the table; its columns are \['height'"),
        ({"columns": SCHEMA, "target": "labels"}, ValueError, r"column 'labels' is not in the table"),
        ({"columns": {**SCHEMA, "city": "text"}, "target": "label"}, ValueError, r"must be 'num' or 'cat'"),
        ({"columns": {**SCHEMA, "label": "cat"}, "target": "label"}, ValueError,
         r"the target 'label' is also listed in columns"),
        ({"columns": {"city": "num"}, "target": "label"}, ValueError,
         r"numeric column 'city' holds '(paris|rome|oslo)'; declare it 'cat'"),
        ({"columns": SCHEMA, "target": "label", "task": "ranking"}, ValueError, r"task must be one of"),
        ({"columns": {"height": "num"}, "target": "city", "task": "regression"}, ValueError,
         r"regression target 'city' has non-numeric values"),
        ({"columns": SCHEMA, "target": "label", "split": "val"}, ValueError, r"unknown split 'val'"),
        ({"columns": SCHEMA, "target": "label", "test_fraction": 1.0}, ValueError, r"test_fraction must be in"),
    ],
)
def test_bad_schemas_fail_naming_what_to_fix(tmp_path, kwargs, error, message):
    write_csv(tmp_path / "t.csv")
    with pytest.raises(error, match=message):
        Table(str(tmp_path / "t.csv"), **kwargs)


def test_missing_files_and_unknown_sources_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file, and not a known table.*'breast_cancer'.*'adult'"):
        Table(str(tmp_path / "nope.csv"), columns={"a": "num"}, target="b")
    with pytest.raises(FileNotFoundError) as info:
        Table("adult", root=tmp_path)
    message = str(info.value)
    assert "https://archive.ics.uci.edu/dataset/2/adult" in message and str(tmp_path / "adult" / "adult.data") in message
    assert "path=" in message and "nothing is downloaded" in message
    with pytest.raises(FileNotFoundError, match=r"fetch_california_housing"):
        Table("california", path=tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"path= is the downloaded file of a layout"):
        Table("wine", path=tmp_path / "wine.csv")


def test_a_class_with_one_row_cannot_be_stratified(tmp_path):
    frame = write_csv(tmp_path / "t.csv")
    frame.loc[0, "label"] = "unique"
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"cannot split 60 rows into train and test"):
        Table(str(tmp_path / "t.csv"), columns=SCHEMA, target="label")


def test_layouts_read_the_documented_files(tmp_path):
    rng = np.random.default_rng(0)
    # adult.data as UCI ships it: no header, ", " separators, "?" for missing
    lines = [
        f"{rng.integers(17, 90)}, {rng.choice(['Private', '?'])}, {rng.integers(10**4, 10**6)}, Bachelors, 13, "
        f"Never-married, Sales, Not-in-family, White, {rng.choice(['Male', 'Female'])}, 0, 0, "
        f"{rng.integers(1, 99)}, United-States, {'>50K' if i % 3 == 0 else '<=50K'}"
        for i in range(30)
    ]
    (tmp_path / "adult").mkdir()
    (tmp_path / "adult" / "adult.data").write_text("\n".join(lines) + "\n")
    adult = Table("adult", root=tmp_path)
    assert adult.classes == ["<=50K", ">50K"] and adult.task == "classification"
    assert len(adult.num_columns) == 6 and len(adult.cat_columns) == 8
    assert adult.cat_vocab[adult.cat_columns.index("workclass")] == ["Private"]  # "?" is missing -> code 0

    higgs = np.column_stack([rng.integers(0, 2, 20).astype(float), rng.normal(size=(20, 28))])
    np.savetxt(tmp_path / "higgs.csv", higgs, delimiter=",")
    table = Table("higgs", path=tmp_path / "higgs.csv", test_fraction=0.25)
    assert table.classes == ["background", "signal"] and table.x_num.shape == (15, 28)
    np.testing.assert_array_equal(table.targets, higgs[table.rows, 0])
    california = pd.DataFrame(rng.normal(size=(20, 9)), columns=[*LAYOUTS["california"].columns, "MedHouseVal"])
    (tmp_path / "california").mkdir()
    california.to_csv(tmp_path / "california" / "california_housing.csv", index=False)
    table = Table("california", root=tmp_path, split="test", test_fraction=0.25)
    assert table.task == "regression" and table.x_num.shape == (5, 8)
    np.testing.assert_allclose(table.targets, california["MedHouseVal"].to_numpy(np.float32)[table.rows])
    assert set(LAYOUTS) == {"adult", "higgs", "california"}


def test_split_is_stratified_and_deterministic():
    a, b = Table("wine", seed=1), Table("wine", seed=1)
    c, test = Table("wine", seed=2), Table("wine", split="test", seed=1)
    assert np.array_equal(a.rows, b.rows) and not np.array_equal(a.rows, c.rows)
    counts, test_counts = np.bincount(a.targets), np.bincount(test.targets)
    full = counts + test_counts
    assert full.tolist() == [59, 71, 48]
    assert np.all(np.abs(test_counts - 0.2 * full) <= 1)  # every class keeps its share
    # a regression table is split at random, the same way for the same seed
    assert np.array_equal(Table("randhie", seed=4).rows, Table("randhie", seed=4).rows)


def test_limit_keeps_a_balanced_subset_and_the_full_split_statistics():
    full, small = Table("digits"), Table("digits", limit=100)
    assert len(small) == 100 and np.bincount(small.targets).tolist() == [10] * 10
    np.testing.assert_array_equal(small.num_mean, full.num_mean)
    position = {row: i for i, row in enumerate(full.rows)}
    assert torch.equal(small.x_num, full.x_num[[position[r] for r in small.rows]])


def test_rows_collate_into_x_num_x_cat_batches():
    table = Table("fair")
    loader = DataLoader(TransformedDataset(table), batch_size=16, collate_fn=collate)
    batch = next(iter(loader))
    assert set(batch) == {"x_num", "x_cat", "label", "index"}
    assert batch["x_num"].shape == (16, 4) and batch["x_num"].dtype == torch.float32
    assert batch["x_cat"].shape == (16, 4) and batch["x_cat"].dtype == torch.int64
    assert torch.equal(batch["x_cat"], table.x_cat[:16]) and batch["label"].tolist() == table.targets[:16].tolist()
    assert batch["index"].tolist() == list(range(16))
    regression = next(iter(DataLoader(TransformedDataset(Table("randhie")), batch_size=8, collate_fn=collate)))
    assert regression["label"].dtype == torch.float32 and regression["label"].shape == (8,)
    assert "Table('fair', split='train', n=5092, target='had_affair', 2 classes, num=4, cat=4" in repr(table)
