"""Bad samples and bad values in the data layer: a corrupt file stops a run with one clean line naming it,
or is skipped deterministically and logged; a table's inf or fill marker is refused at load time."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ssl_platform.data.collate import (
    MAX_CONSECUTIVE_BAD,
    BadSampleError,
    TransformedDataset,
    collate,
    count_skipped,
)
from ssl_platform.data.datasets import ImageFolder, ImageTextPairs, Molecules, Table
from ssl_platform.data.samplers import ResumableSampler
from ssl_platform.engine.preemption import stop_workers

N = 10
WORKERS = pytest.param(2, marks=pytest.mark.slow, id="2")  # DataLoader worker processes


def noisy_tensor(image):
    """PIL -> {"image": [3, 8, 8]} plus noise from torch's RNG, so a draw depends on its seed."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return {"image": x + torch.rand(1)}


def write_png(path, k):
    Image.fromarray(np.full((8, 8, 3), k * 20, np.uint8)).save(path)


def corrupt(path, kind):
    """A truncated PNG (a real one cut in half) or random bytes under a .png name."""
    if kind == "truncated":
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(np.random.default_rng(2).integers(0, 256, 500, dtype=np.uint8).tobytes())


def image_dir(root, bad=(), kind="random"):
    """N unlabelled 8x8 PNGs img_0.png .. img_9.png (sorted order = index), the `bad` ones corrupt."""
    root.mkdir(exist_ok=True)
    for k in range(N):
        write_png(root / f"img_{k}.png", k)
        if k in bad:
            corrupt(root / f"img_{k}.png", kind)
    return root


def epoch(data, num_workers, seed=3, start=0):
    """One epoch of batches of 5 through a real DataLoader with the engine's sampler, from draw `start`."""
    sampler = ResumableSampler(len(data), seed=seed)
    sampler.set_epoch(1)
    sampler.set_start(start)
    batches = iter(DataLoader(data, batch_size=5, sampler=sampler, collate_fn=collate, num_workers=num_workers))
    try:
        return list(batches), [index for index, _ in sampler]
    finally:
        # as the engine does: stopped now, the workers take milliseconds; left to the garbage collector
        # (an exception's traceback keeps the iterator alive), torch waits 5 s for each
        stop_workers(batches)


@pytest.mark.parametrize("num_workers", [0, WORKERS])
@pytest.mark.parametrize("kind", ["truncated", "random"])
def test_corrupt_image_stops_with_one_clean_line_naming_the_file(tmp_path, kind, num_workers):
    root = image_dir(tmp_path / "images", bad=(4,), kind=kind)
    data = TransformedDataset(ImageFolder(root), noisy_tensor)
    with pytest.raises(BadSampleError) as info:
        epoch(data, num_workers)
    message = str(info.value)
    assert isinstance(info.value, ValueError)  # the CLI prints ValueErrors as `error: ...`
    assert message.startswith("ImageFolder sample 4 (") and str(root / "img_4.png") in message
    assert "OSError" in message and "set data.on_bad_sample=skip" in message and "remove or fix the file" in message
    assert "\n" not in message and "Traceback" not in message and 'File "' not in message
    assert ("DataLoader worker process" in message) == (num_workers > 0)


def test_worker_traceback_message_is_cut_to_our_line():
    # the string torch's ExceptionWrapper.reraise passes to BadSampleError(...) in the main process
    ours = "ImageFolder sample 4 (/d/img_4.png) cannot be read: OSError: bad. To go on: remove or fix the file"
    wrapped = ("Caught BadSampleError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 3, in f\n    raise OSError("bad")\nOSError: bad\n\nThe above exception was the '
               f'direct cause of the following exception:\n\n  File "c.py", line 9\nssl_platform.data.collate.'
               f"BadSampleError: {ours}\n")
    assert str(BadSampleError(wrapped)) == f"{ours} (raised in DataLoader worker process 1)"
    assert str(BadSampleError(ours)) == ours  # a message of our own is left alone


@pytest.mark.parametrize("num_workers", [0, WORKERS])
def test_skip_replaces_bad_samples_by_the_next_good_index_with_the_same_seed(tmp_path, num_workers, capfd):
    bad = {3, 4, 9}  # two in a row, and the last one (its replacement wraps around to 0)
    root = image_dir(tmp_path / "images", bad=bad)
    log = tmp_path / "run" / "skipped.jsonl"
    data = TransformedDataset(ImageFolder(root), noisy_tensor, on_bad_sample="skip", skip_log=log)
    good = TransformedDataset(ImageFolder(image_dir(tmp_path / "clean")), noisy_tensor)  # same pictures, none bad

    batches, drawn = epoch(data, num_workers)
    assert [b["image"].shape for b in batches] == [(5, 3, 8, 8)] * 2  # batches keep their size

    def next_good(i):  # naive reference: walk forward until a good index
        while i in bad:
            i = (i + 1) % N
        return i

    sampler = ResumableSampler(N, seed=3)
    sampler.set_epoch(1)
    for position, (index, seed) in enumerate(sampler):
        batch, row = batches[position // 5], position % 5
        expected = good[(next_good(index), seed)]  # the replacement, drawn with the bad index's seed
        assert batch["index"][row] == expected["index"]
        assert torch.equal(batch["image"][row], expected["image"])
    assert {i for i in drawn if i in bad} == bad

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(entry["index"] for entry in lines) == sorted(bad)  # one line per skipped draw
    for entry in lines:
        assert entry["source"] == str(root / f"img_{entry['index']}.png") and "OSError" in entry["error"]
    assert count_skipped(log) == 3
    err = capfd.readouterr().err
    skipped = [line for line in err.splitlines() if "skipped bad sample" in line]
    assert len(skipped) == 3 and all(str(log) in line and str(root) in line for line in skipped)

    again, _ = epoch(data, num_workers)  # a second run sees exactly the same data
    resumed, rest = epoch(data, num_workers, start=5)  # and so does a run resumed after the first batch
    for a, b in zip(batches, again, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
    assert torch.equal(resumed[0]["image"], batches[1]["image"]) and rest == drawn[5:]
    logged = 3 + 3 + len(bad & set(rest))
    assert len(log.read_text().splitlines()) == logged and count_skipped(log) == 3  # logged again, counted once


def test_skip_with_every_sample_bad_raises(tmp_path):
    root = image_dir(tmp_path / "images", bad=set(range(N)))
    data = TransformedDataset(ImageFolder(root), noisy_tensor, on_bad_sample="skip", skip_log=tmp_path / "s.jsonl")
    with pytest.raises(BadSampleError, match=rf"every one of its {N} samples cannot be read.*check the dataset's root"):
        data[(2, 7)]
    assert count_skipped(tmp_path / "s.jsonl") == 1


def test_skip_gives_up_after_a_long_run_of_bad_samples(tmp_path):
    class Broken:
        def __len__(self):
            return MAX_CONSECUTIVE_BAD + 5

        def __getitem__(self, index):
            if index < MAX_CONSECUTIVE_BAD + 2:
                raise OSError(f"no file {index}")
            return torch.zeros(1), 0

    data = TransformedDataset(Broken(), on_bad_sample="skip")
    with pytest.raises(BadSampleError, match=rf"{MAX_CONSECUTIVE_BAD} samples in a row from index 0"):
        data[0]
    assert data[MAX_CONSECUTIVE_BAD - 1]["index"] == MAX_CONSECUTIVE_BAD + 2  # a shorter run still finds one


def test_a_failing_transform_is_a_bad_sample_naming_the_transform(tmp_path):
    def fails_on_dark(image):
        if np.asarray(image).max() == 0:
            raise ValueError("all black")
        return noisy_tensor(image)

    data = TransformedDataset(ImageFolder(image_dir(tmp_path / "images")), fails_on_dark)
    with pytest.raises(BadSampleError, match=r"sample 0 \(.*img_0.png\) fails in transform fails_on_dark: ValueError: all black"):
        data[(0, 1)]
    assert data[(1, 1)]["index"] == 1


def test_unknown_on_bad_sample_is_refused_and_out_of_range_stays_an_index_error():
    with pytest.raises(ValueError, match=r"on_bad_sample must be one of \['error', 'skip'\], got 'ignore'"):
        TransformedDataset([], on_bad_sample="ignore")
    with pytest.raises(IndexError):  # out of range stays an IndexError: it ends plain iteration
        TransformedDataset([(torch.zeros(1), 0)])[5]


def test_count_skipped_reads_distinct_indices(tmp_path):
    log = tmp_path / "s.jsonl"
    assert count_skipped(log) == 0
    log.write_text('{"index": 3, "source": null, "error": "x"}\n{"index": 3}\n{"index": 8}\n\n')
    assert count_skipped(log) == 2
    log.write_text('{"index": 3}\nnot json\n')
    with pytest.raises(ValueError, match=r"s.jsonl line 2 is not a JSON object with an 'index'"):
        count_skipped(log)


def test_manifest_pair_with_a_corrupt_image_names_its_manifest_line(tmp_path):
    image_dir(tmp_path, bad=(1,))
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps({"image": f"img_{k}.png", "text": f"t{k}"})
                                                    for k in range(3)) + "\n")
    pairs = ImageTextPairs(tmp_path / "pairs.jsonl")
    with pytest.raises(OSError, match=r"cannot read image .*img_1.png \(.*pairs.jsonl line 2"):
        pairs[1]
    data = TransformedDataset(pairs, lambda s: {"text": s["text"]})
    with pytest.raises(BadSampleError, match=r"ImageTextPairs sample 1 \(.*pairs.jsonl line 2, image .*img_1.png\)"):
        data[1]


def test_broken_sdf_record_names_the_file(tmp_path):
    (tmp_path / "molecules").mkdir()
    path = tmp_path / "molecules" / "solubility.train.sdf"
    path.write_text("name\n  program\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\n"
                    "    0.0    0.0    0.0 C   0  0\n$$$$\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: SDF molecule 0 \(line 5: .*atom line without an element"):
        Molecules(root=tmp_path)


# ---- tables: inf and fill markers are refused at load time


def table(tmp_path, cells, n=40):
    """A CSV with numeric a, b, a class target; `cells` sets {(column, row): value}; returns its path."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "y": ["p", "q"] * (n // 2)})
    frame["price"] = rng.uniform(1, 2, n)
    for (column, row), value in cells.items():
        frame.loc[row, column] = value
    frame.to_csv(tmp_path / "t.csv", index=False)
    return str(tmp_path / "t.csv")


@pytest.mark.parametrize("value, shown", [(np.inf, "inf"), (-np.inf, "-inf"), (1e30, "1e+30"), (-2e20, "-2e+20")])
def test_table_refuses_inf_and_absurd_magnitudes_naming_column_and_row(tmp_path, value, shown):
    path = table(tmp_path, {("b", 7): value, ("b", 30): value})
    with pytest.raises(ValueError) as info:
        Table(path, columns={"a": "num", "b": "num"}, target="y")
    message = str(info.value)
    assert "numeric column 'b'" in message and f"holds {shown} in row 7" in message and "2 such rows" in message
    assert "leave the cells empty" in message
    # the same file read as written: row 7 of the data (0-based, header not counted) holds the value
    assert pd.read_csv(path)["b"].iloc[7] == value


def test_table_refuses_an_inf_regression_target(tmp_path):
    path = table(tmp_path, {("price", 12): np.inf})
    with pytest.raises(ValueError, match=r"regression target 'price' holds inf in row 12"):
        Table(path, columns={"a": "num"}, target="price", task="regression")


def test_table_keeps_large_finite_values_and_missing_ones(tmp_path):
    path = table(tmp_path, {("a", 3): 1e17, ("b", 5): np.nan})
    kw = {"columns": {"a": "num", "b": "num"}, "target": "y"}
    train, test = Table(path, **kw), Table(path, split="test", **kw)
    assert torch.isfinite(train.x_num).all() and torch.isfinite(test.x_num).all()
    part = train if 5 in train.rows else test
    assert part.x_num[list(part.rows).index(5), 1] == 0.0  # missing -> the training mean, 0 once standardised


def test_table_sample_source_is_the_file_row_when_rows_without_target_are_dropped(tmp_path):
    path = table(tmp_path, {("y", 0): np.nan, ("y", 1): np.nan})
    t = Table(path, columns={"a": "num", "b": "num"}, target="y", test_fraction=0.25)
    raw = pd.read_csv(path)
    for i in range(len(t)):
        row = int(t.file_rows[i])
        assert t.sample_source(i) == f"t.csv row {row}"
        expected = (raw[["a", "b"]].to_numpy()[row] - t.num_mean) / t.num_std
        np.testing.assert_allclose(t.x_num[i].numpy(), expected, rtol=1e-5)
    assert 0 not in t.file_rows and 1 not in t.file_rows
