"""tools/bench.py read: samples/s of a folder, its shards on disk and over http, as a table and one JSON line
(values, never times)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_platform.data.datasets import ImageFolder
from ssl_platform.data.shards import write_shards

spec = importlib.util.spec_from_file_location("bench_tool", Path(__file__).resolve().parents[2] / "tools" / "bench.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)

RATES = ("folder", "shards_local", "shards_http")


def make_folder(root: Path, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow  # writes shards, serves them over http and reads everything three times
def test_read_prints_a_table_then_one_json_line_with_every_rate(tmp_path, monkeypatch, capsys):
    folder = make_folder(tmp_path / "images")
    monkeypatch.setattr(sys, "argv", ["bench.py", "read", str(folder), "--items", "20", "--batch", "8",
                                      "--shard-size", "2KB"])
    assert tool.main() == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert all(result[k] > 0 for k in RATES)
    assert result["items"] == 20 and result["workers"] == 0 and result["batch"] == 8
    assert result["shards"] >= 2 and result["shard_bytes"] > 0, "2KB shards of 24 images are several"
    assert lines[0].startswith("20 items, 0 workers, batch 8")
    assert any("shards over http, cold cache" in line for line in lines[1:-1])


@pytest.mark.slow
def test_given_shards_are_read_and_a_count_that_differs_from_the_folder_is_refused(tmp_path):
    folder, other = make_folder(tmp_path / "images"), make_folder(tmp_path / "other", per_class=5)
    shards = tmp_path / "shards"
    write_shards(ImageFolder(folder), shards, shard_size="4KB", source=str(folder))
    result = tool.bench_read(folder, shards, workers=0, items=None, batch=8, shard_size="unused")
    assert result["items"] == 24 and result["shards"] == len(list(shards.glob("*.bin")))
    with pytest.raises(ValueError, match="holds 24 items and .* 10: shards of another folder"):
        tool.bench_read(other, shards, workers=0, items=None, batch=8, shard_size="unused")


class Recording:
    """A dataset that remembers which items were read, in which order."""

    def __init__(self, n: int):
        self.n, self.read = n, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        self.read.append(index)
        return Image.new("L", (4, 4)), index


def test_a_raw_read_takes_each_item_of_the_order_once_and_keeps_batches_as_lists():
    """What is timed is reading the items the order names, nothing else: no collate into tensors."""
    dataset, order = Recording(10), [7, 2, 9, 0, 4]
    assert tool.read_rate(dataset, order, workers=0, batch=2) > 0
    assert dataset.read == order
    items = [(Image.new("L", (4, 4)), 0)]
    assert tool._keep(items) is items
