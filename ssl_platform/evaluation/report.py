"""Results on disk: `results.jsonl` (one row per measurement) and `summary.md` (mean ± std over seeds).

Every row has exactly the keys of `KEYS`, so tables, plots and other tools can rely on them. A
measurement without label noise has `noise_kind="none"`, both rates 0.0 and `robust="none"`.
The realised noise rate (the share of labels that really changed) is kept beside the nominal one
because "symmetric 40%" means different things in different codebases.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

KEYS: tuple[str, ...] = (
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
)
# rows that differ only in these are repeats of one setting: summary.md averages over them
REPEAT_KEYS = ("seed", "noise_rate_realised", "value")
SUMMARY_FILE = "summary.md"


def make_row(
    task: str,
    protocol: str,
    metric: str,
    value: float,
    backbone: str,
    seed: int,
    label_fraction: float = 1.0,
    noise_kind: str = "none",
    noise_rate: float = 0.0,
    noise_rate_realised: float = 0.0,
    robust: str = "none",
) -> dict[str, Any]:
    """One results row with every key of `KEYS`, values cast to JSON types."""
    return {
        "task": str(task),
        "protocol": str(protocol),
        "label_fraction": float(label_fraction),
        "noise_kind": str(noise_kind),
        "noise_rate": float(noise_rate),
        "noise_rate_realised": float(noise_rate_realised),
        "robust": str(robust),
        "seed": int(seed),
        "metric": str(metric),
        "value": float(value),
        "backbone": str(backbone),
    }


def check_row(row: dict[str, Any]) -> None:
    """Raise if `row` does not have exactly the keys of `KEYS`, naming the missing and extra ones."""
    missing, extra = [k for k in KEYS if k not in row], sorted(set(row) - set(KEYS))
    if missing or extra:
        raise ValueError(
            f"results row must have exactly the keys {list(KEYS)}; missing {missing}, extra {extra} "
            f"(build rows with report.make_row): {row}"
        )


def append_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows to a JSON-lines file (created with its parent directories if needed).

    Every row is checked before anything is written, so a bad row never leaves half a batch behind.
    """
    rows = list(rows)
    for row in rows:
        check_row(row)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in KEYS}) + "\n")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a `results.jsonl`, each checked against `KEYS`."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for row in rows:
        check_row(row)
    return rows


def _fmt(value: float, metric: str) -> str:
    # accuracies read best with two decimals; anything else (λ, rates) keeps three significant digits
    return f"{value:.2f}" if metric.endswith("top1") else f"{value:.3g}"


def _noise(rows: Sequence[dict[str, Any]]) -> str:
    first = rows[0]
    if first["noise_kind"] == "none":
        return "none"
    realised = statistics.fmean(r["noise_rate_realised"] for r in rows)
    return f"{first['noise_kind']} {first['noise_rate']:g} (realised {realised:.3f})"


def _mean_std(values: Sequence[float], metric: str) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{_fmt(mean, metric)} ± –"
    std = statistics.stdev(values)  # sample std, ddof=1
    return f"{_fmt(mean, metric)} ± {_fmt(std, metric)}"


CAPTION = (
    "Mean ± std over seeds; std is the sample standard deviation (ddof=1), shown as – when n = 1; "
    "n is the number of seeds. Accuracies (top1) are in %."
)
# the columns that name a setting, in the order tables are sorted by
SETTING = ("backbone", "task", "protocol", "label_fraction", "noise_kind", "noise_rate", "robust", "metric")


def _settings(rows: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows grouped by setting (every key but the repeat keys), sorted; each group's seeds checked."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        check_row(row)
        groups.setdefault(tuple(row[k] for k in KEYS if k not in REPEAT_KEYS), []).append(row)
    for members in groups.values():
        first, seeds = members[0], [r["seed"] for r in members]
        if len(set(seeds)) != len(seeds):
            raise ValueError(
                f"seeds {sorted(seeds)} repeat for {first['backbone']}/{first['task']}/{first['protocol']}/"
                f"{first['metric']}: were two runs appended to one results.jsonl? Use a fresh out_dir per run"
            )
        if not all(math.isfinite(r["value"]) for r in members):
            raise ValueError(
                f"non-finite value in results for {first['task']}/{first['protocol']}: {members}"
            )
    return sorted(groups.values(), key=lambda g: tuple(g[0][k] for k in SETTING))


def _cells(first: dict[str, Any], members: Sequence[dict[str, Any]]) -> str:
    """task | protocol | label fraction | noise | robust | metric, for one setting."""
    return (
        f"{first['task']} | {first['protocol']} | {first['label_fraction']:g} | {_noise(members)} "
        f"| {first['robust']} | {first['metric']}"
    )


def summarise(rows: Iterable[dict[str, Any]]) -> str:
    """A markdown table: one line per setting, mean ± std of `value` over its seeds.

    Args:
        rows: results rows (see `KEYS`); a seed may occur once per setting.

    Returns:
        Markdown text: a caption stating the std convention (ddof=1) and the table, sorted by
        backbone, task, protocol, label fraction, noise, robust method and metric.
    """
    lines = [
        CAPTION,
        "",
        "| backbone | task | protocol | label fraction | noise | robust | metric | mean ± std | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for members in _settings(rows):
        first, values = members[0], [r["value"] for r in members]
        lines.append(
            f"| {first['backbone']} | {_cells(first, members)} | {_mean_std(values, first['metric'])} "
            f"| {len(members)} |"
        )
    return "\n".join(lines) + "\n"


def compare(rows: Iterable[dict[str, Any]]) -> str:
    """A markdown table with one column per backbone (in order of appearance), to compare them side by side.

    Args:
        rows: results rows of one or more backbones.

    Returns:
        Markdown text: the caption and one line per setting; a cell reads `mean ± std (n)`, or `–`
        when that backbone has no result for the setting.
    """
    rows = list(rows)
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    table: dict[tuple, dict[str, str]] = {}
    labels: dict[tuple, str] = {}
    for members in _settings(rows):
        first = members[0]
        key = tuple(first[k] for k in SETTING if k != "backbone")
        labels.setdefault(key, _cells(first, members))
        values = [r["value"] for r in members]
        table.setdefault(key, {})[first["backbone"]] = f"{_mean_std(values, first['metric'])} ({len(values)})"
    lines = [
        CAPTION,
        "",
        "| task | protocol | label fraction | noise | robust | metric | " + " | ".join(backbones) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(backbones),
    ]
    for key in sorted(table):
        lines.append(f"| {labels[key]} | " + " | ".join(table[key].get(b, "–") for b in backbones) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write `summarise(rows)` to `out_dir/summary.md`; returns its path."""
    path = Path(out_dir) / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summarise(rows))
    return path
