"""tools/merge_evals.py: seeds evaluated separately come out as one comparison, with mean ± std."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ssl_platform.evaluation.report import append_rows, make_row, read_rows

spec = importlib.util.spec_from_file_location(
    "merge_evals", Path(__file__).resolve().parents[2] / "tools" / "merge_evals.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def run(tmp_path, name, seed, values):
    d = tmp_path / name
    append_rows(d / "results.jsonl", [
        make_row("fmnist", "linear", "top1", v, backbone, seed, label_fraction=f, git_sha="abc")
        for (backbone, f), v in values.items()])
    return d


def test_two_seeds_of_two_backbones_become_one_table_and_plot(tmp_path):
    a = run(tmp_path, "s0", 0, {("spark", 0.01): 80.0, ("spark", 0.1): 82.0, ("simclr", 0.01): 79.0, ("simclr", 0.1): 83.0})
    b = run(tmp_path, "s1", 1, {("spark", 0.01): 82.0, ("spark", 0.1): 84.0, ("simclr", 0.01): 81.0, ("simclr", 0.1): 83.0})
    out = tmp_path / "merged"
    rows = tool.merge([a, b], out)
    assert len(rows) == 8 and read_rows(out / "results.jsonl") == rows
    table = (out / "compare.md").read_text()
    # spark at 1%: (80 + 82) / 2 ± sample std sqrt(2)
    assert "81.00 ± 1.41" in table and "83.00 ± 0.00" in table
    assert (out / "plots" / "fmnist-top1-fraction.png").stat().st_size > 1000


def test_a_setting_measured_twice_is_refused(tmp_path):
    a = run(tmp_path, "a", 0, {("spark", 0.01): 80.0})
    b = run(tmp_path, "b", 0, {("spark", 0.01): 80.5})
    with pytest.raises(SystemExit, match="is in both"):
        tool.merge([a, b], tmp_path / "out")
    with pytest.raises(SystemExit, match="does not exist"):
        tool.merge([tmp_path / "nowhere"], tmp_path / "out")
