"""Merge eval runs done one at a time (seeds, label fractions, backbones) into one comparison.

    python tools/merge_evals.py --out docs/img/spark/fewlabels runs/eval/fmnist_fewlabels_seed0-* runs/eval/fmnist_fewlabels_seed1-*

Reads every DIR/results.jsonl and writes OUT/results.jsonl (all rows), OUT/compare.md (backbones side by
side, mean ± std over the seeds found) and OUT/plots/ (metric against label fraction / noise rate), the
files `sslp eval backbone=A,B` writes for one command. A setting measured twice (same backbone, task,
protocol, fraction, noise, robust method, seed and metric) is an error: the merge would count it twice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ssl_platform.evaluation.output import write_comparison
from ssl_platform.evaluation.report import KEYS, append_rows, read_rows

SETTING = tuple(k for k in KEYS if k not in ("value", "noise_rate_realised", "backbone_sha256", "git_sha"))


def merge(dirs: list[Path], out: Path) -> list[dict]:
    """All rows of `dirs`, checked for settings measured twice, written to `out` with the comparison."""
    rows, seen = [], {}
    for d in dirs:
        path = Path(d) / "results.jsonl"
        if not path.exists():
            raise SystemExit(f"merge_evals: {path} does not exist; pass eval output directories (runs/eval/...)")
        for row in read_rows(path):
            key = tuple(row[k] for k in SETTING)
            if key in seen:
                raise SystemExit(f"merge_evals: {dict(zip(SETTING, key))} is in both {seen[key]} and {d}; "
                                 "drop one of them")
            seen[key] = d
            rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").unlink(missing_ok=True)
    append_rows(out / "results.jsonl", rows)
    write_comparison(out, rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="eval output directories holding results.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="directory for results.jsonl, compare.md, plots/")
    args = parser.parse_args()
    rows = merge(args.dirs, args.out)
    print(f"merged {len(rows)} rows from {len(args.dirs)} runs into {args.out}")


if __name__ == "__main__":
    main()
