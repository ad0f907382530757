"""What an evaluation leaves beside its `results.jsonl`: `summary.md` with the plots linked from it,
and, for several backbones, `compare.md` with their plots side by side.

The composition of `report.py` (tables) and `plots.py` (PNGs and their CSVs); it sits above both, so
neither knows the other beyond the public grouping of rows that `report.py` offers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ssl_platform.checkpoint.io import write_atomic
from ssl_platform.evaluation.plots import write_plots
from ssl_platform.evaluation.report import compare, write_summary

COMPARE_FILE = "compare.md"


def write_report(out_dir: str | Path, rows: Iterable[dict[str, Any]]) -> dict[str, Path | list[Path]]:
    """`write_summary` plus `write_plots`, with a "Plots" section linking the PNGs appended to summary.md.

    Returns:
        {"summary": path of summary.md, "plots": the PNGs written}.
    """
    rows = list(rows)
    plots = write_plots(out_dir, rows)
    lines = ["", "## Plots", ""]
    if not plots:
        lines.append("None: a plot needs two noise rates, or two label fractions, of one task.")
    for png in plots:
        link = png.relative_to(Path(out_dir)).as_posix()
        lines += [f"![{png.stem}]({link}) ([numbers]({link[: -len('.png')]}.csv))", ""]
    summary = write_summary(out_dir, rows, "\n".join(lines).rstrip("\n") + "\n")
    return {"summary": summary, "plots": plots}


def write_comparison(out_dir: str | Path, rows: Iterable[dict[str, Any]]) -> str:
    """`compare(rows)` to `out_dir/compare.md` (atomically) and `write_plots` beside it, one line per
    backbone x protocol; returns the table."""
    rows = list(rows)
    table = compare(rows)
    write_atomic(Path(out_dir) / COMPARE_FILE, table.encode())
    write_plots(out_dir, rows)
    return table
