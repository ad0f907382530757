"""results.jsonl rows (exact keys, round trip) and the summary tables (mean ± std, ddof=1, n)."""

from __future__ import annotations

import json
import statistics

import pytest

from ssl_platform.evaluation.report import (
    KEYS,
    append_rows,
    compare,
    make_row,
    read_rows,
    summarise,
    write_summary,
)

EXPECTED_KEYS = {
    "task",
    "protocol",
    "label_fraction",
    "noise_kind",
    "noise_rate",
    "noise_rate_realised",
    "robust",
    "seed",
    "metric",
    "value",
    "backbone",
}


def rows_for(backbone="random", values=(90.0, 92.0, 97.0), protocol="knn_k20_t0.07", **kw):
    return [make_row("digits", protocol, "top1", v, backbone, seed, **kw) for seed, v in enumerate(values)]


def test_rows_have_exactly_the_design_keys_and_no_noise_defaults():
    row = make_row("digits", "linear", "top1", 93.5, "random", 2)
    assert set(row) == EXPECTED_KEYS == set(KEYS)
    assert row["noise_kind"] == "none" and row["robust"] == "none"
    assert row["noise_rate"] == 0.0 and row["noise_rate_realised"] == 0.0 and row["label_fraction"] == 1.0
    json.dumps(row)  # plain JSON types only


def test_append_and_read_round_trip(tmp_path):
    path = tmp_path / "sub" / "results.jsonl"
    first = rows_for()
    second = rows_for(protocol="linear", noise_kind="symmetric", noise_rate=0.4, noise_rate_realised=0.36)
    append_rows(path, first)
    append_rows(path, second)
    assert read_rows(path) == first + second
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and all(list(json.loads(line)) == list(KEYS) for line in lines)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("noise_rate_realised"), r"missing \['noise_rate_realised'\]"),
        (lambda r: r.update(lr=0.1), r"extra \['lr'\]"),
    ],
)
def test_bad_rows_fail_before_anything_is_written(tmp_path, change, message):
    rows = rows_for()
    change(rows[-1])
    path = tmp_path / "results.jsonl"
    with pytest.raises(ValueError, match=message):
        append_rows(path, rows)
    assert not path.exists()


def test_summary_is_mean_and_sample_std_over_seeds():
    text = summarise(rows_for(values=(90.0, 92.0, 97.0)) + rows_for(protocol="linear", values=(80.0,)))
    assert "ddof=1" in text
    mean, std = statistics.fmean([90, 92, 97]), statistics.stdev([90, 92, 97])  # 93.0, 3.61 (ddof=0: 2.94)
    assert (
        f"| random | digits | knn_k20_t0.07 | 1 | none | none | top1 | {mean:.2f} ± {std:.2f} | 3 |" in text
    )
    assert "| random | digits | linear | 1 | none | none | top1 | 80.00 ± – | 1 |" in text
    # one table line per setting, sorted by protocol
    lines = [line for line in text.splitlines() if line.startswith("| random")]
    assert [line.split(" | ")[2] for line in lines] == ["knn_k20_t0.07", "linear"]


def test_summary_separates_settings_and_reports_realised_noise():
    rows = rows_for(values=(50.0, 52.0)) + rows_for(
        values=(40.0, 44.0), noise_kind="symmetric", noise_rate=0.4, noise_rate_realised=0.36
    )
    rows[-1]["noise_rate_realised"] = 0.38  # realised rates vary with the seed: their mean is shown
    text = summarise(rows)
    assert "| none | none | top1 | 51.00 ± 1.41 | 2 |" in text
    assert "| symmetric 0.4 (realised 0.370) | none | top1 | 42.00 ± 2.83 | 2 |" in text


def test_repeated_seeds_are_an_error():
    with pytest.raises(ValueError, match="appended to one results.jsonl"):
        summarise(rows_for() + rows_for())


def test_write_summary(tmp_path):
    path = write_summary(tmp_path, rows_for())
    assert path == tmp_path / "summary.md" and path.read_text() == summarise(rows_for())


def test_compare_puts_backbones_side_by_side():
    rows = rows_for("random", (90.0, 92.0)) + rows_for("simclr", (95.0, 97.0))
    rows += rows_for("simclr", (70.0,), protocol="linear")
    text = compare(rows)
    assert "| task | protocol | label fraction | noise | robust | metric | random | simclr |" in text
    assert "| digits | knn_k20_t0.07 | 1 | none | none | top1 | 91.00 ± 1.41 (2) | 96.00 ± 1.41 (2) |" in text
    assert "| digits | linear | 1 | none | none | top1 | – | 70.00 ± – (1) |" in text
