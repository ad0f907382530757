"""Results on disk: `results.jsonl` (one row per measurement) and `summary.md` (mean ± std over seeds).

Every row has exactly the keys of `KEYS`, so tables, plots and other tools can rely on them. A
measurement without label noise has `noise_kind="none"`, both rates 0.0 and `robust="none"`.
The realised noise rate (the share of labels that really changed) is kept beside the nominal one
because "symmetric 40%" means different things in different codebases. Each row also names what
produced it: the backbone file's sha256 (`""` for a random init) and the code's git sha, so a
number in a table can be traced back to weights and commit.

`group_settings` and `backbone_labels` are the grouping every view of the rows shares (the tables
here, the plots of `plots.py`); `output.write_report` writes `summary.md` with the plots linked.

Every table line names the seeds it pools. A value the protocol selected per seed (`SELECTED`: the
linear probe's λ, the SVM's C) is listed seed by seed, never averaged. Where a random init scores
better than a pretrained backbone on a setting (`random_init_wins`), the table marks the pretrained
backbone's cell with `RANDOM_BETTER` and lists those settings under it.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ssl_platform.checkpoint.atomic import write_atomic
from ssl_platform.provenance import git_sha as _code_version  # make_row's `git_sha` argument shadows the name

KEYS: tuple[str, ...] = (
    "task", "protocol", "label_fraction", "noise_kind", "noise_rate", "noise_rate_realised", "robust", "seed",
    "metric", "value", "backbone", "backbone_sha256", "git_sha",
)
# rows that differ only in these are repeats of one setting: summary.md averages over them. git_sha
# is here so a setting re-run after a commit still averages; the tables flag settings that mix shas
REPEAT_KEYS = ("seed", "noise_rate_realised", "value", "git_sha")
SUMMARY_FILE = "summary.md"
_SHA256 = re.compile(r"[0-9a-f]{64}")
# values a protocol selects per seed (the linear probe's λ, the SVM's C): a mean of two selected
# regularisations is no setting anyone chose, so tables list them per seed
SELECTED = ("lambda", "C")
# bookkeeping rather than a score: never compared with random init
NOT_SCORES = (*SELECTED, "iterations")
LOWER_IS_BETTER = ("rmse",)  # errors; every other score is better when higher (top1, map, r2, recall)
RANDOM_BETTER = "‡"  # after a pretrained backbone's value: a random init scored better on this setting


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
    backbone_sha256: str = "",
    git_sha: str | None = None,
) -> dict[str, Any]:
    """One results row with every key of `KEYS`, values cast to JSON types.

    `backbone_sha256` is `file_sha256` of the backbone's safetensors file, "" for a random init;
    `git_sha` defaults to `git_sha()`, the code version of this checkout.
    """
    if backbone_sha256 and not _SHA256.fullmatch(backbone_sha256):
        raise ValueError(
            f"backbone_sha256 must be 64 lowercase hex digits (provenance.file_sha256) or '' for a random "
            f"init, got {backbone_sha256!r}"
        )
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
        "backbone_sha256": str(backbone_sha256),
        "git_sha": _code_version() if git_sha is None else str(git_sha),
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


def format_seeds(seeds: Iterable[int]) -> str:
    """Sorted seeds, runs of three or more as a range: [0, 1, 2, 3, 7] -> "0–3, 7"."""
    ordered, parts = sorted(set(seeds)), []
    start = 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
            run = ordered[start:i]
            parts += [f"{run[0]}–{run[-1]}"] if len(run) >= 3 else [str(s) for s in run]
            start = i
    return ", ".join(parts)


def _value(members: Sequence[dict[str, Any]]) -> str:
    """mean ± std of the members' values; a `SELECTED` value seed by seed (in seed order) instead."""
    metric = members[0]["metric"]
    if metric in SELECTED:
        return ", ".join(_fmt(r["value"], metric) for r in sorted(members, key=lambda r: r["seed"]))
    return _mean_std([r["value"] for r in members], metric)


CAPTION = (
    "Mean ± std over seeds; std is the sample standard deviation (ddof=1), shown as – when n = 1; "
    "n is the number of seeds, listed under seeds. Accuracies (top1) are in %."
)
MIXED = "†"  # after n: the setting's rows come from more than one git sha
# the columns that name a setting, in the order tables are sorted by
SETTING = ("backbone", "backbone_sha256", "task", "protocol", "label_fraction", "noise_kind", "noise_rate",
           "robust", "metric")


def group_settings(rows: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
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


def _n(members: Sequence[dict[str, Any]]) -> str:
    return f"{len(members)} {MIXED}" if len({r["git_sha"] for r in members}) > 1 else str(len(members))


def _caption(groups: Sequence[Sequence[dict[str, Any]]]) -> str:
    """CAPTION plus what produced the rows: the backbone files' sha256 and the code's git sha(s)."""
    parts = [CAPTION]
    selected = sorted({g[0]["metric"] for g in groups} & set(SELECTED))
    if selected:
        parts.append(f"{' and '.join(selected)}: the value each seed's protocol selected, listed per seed in "
                     "the order of the seeds column, not averaged.")
    files = sorted({(g[0]["backbone"], g[0]["backbone_sha256"]) for g in groups if g[0]["backbone_sha256"]})
    if files:
        parts.append("Backbone sha256: " + ", ".join(f"{name} `{sha}`" for name, sha in files) + ".")
    shas = sorted({r["git_sha"] for g in groups for r in g})
    if len(shas) == 1:
        parts.append(f"Code: git `{shas[0]}`.")
    elif shas:
        parts.append(
            "Code: git "
            + ", ".join(f"`{s}`" for s in shas)
            + f"; n marked {MIXED} pools seeds run at more than one of these."
        )
    return " ".join(parts)


def backbone_labels(groups: Sequence[Sequence[dict[str, Any]]]) -> dict[tuple[str, str], str]:
    """(backbone, backbone_sha256) -> its name, plus a short sha where one name stands for several files."""
    ids = sorted({(g[0]["backbone"], g[0]["backbone_sha256"]) for g in groups})
    names = [name for name, _ in ids]
    return {
        (name, sha): f"{name} ({sha[:8] or 'random init'})" if names.count(name) > 1 else name
        for name, sha in ids
    }


def _cells(first: dict[str, Any], members: Sequence[dict[str, Any]]) -> str:
    """task | protocol | label fraction | noise | robust | metric, for one setting."""
    return (
        f"{first['task']} | {first['protocol']} | {first['label_fraction']:g} | {_noise(members)} "
        f"| {first['robust']} | {first['metric']}"
    )


def summarise(rows: Iterable[dict[str, Any]]) -> str:
    """A markdown table: one line per setting, mean ± std of `value` over its seeds.

    Rows that differ only in `git_sha` are seeds of one setting; the caption lists the git shas and
    marks n with † where a setting mixes them. One backbone name with several files (backbone_sha256)
    gives one line per file, the name followed by a short sha.

    Args:
        rows: results rows (see `KEYS`); a seed may occur once per setting.

    Returns:
        Markdown text: a caption stating the std convention (ddof=1) and what produced the rows, the
        table, sorted by backbone, task, protocol, label fraction, noise, robust method and metric, and
        the settings where a random init beat a pretrained backbone (`random_init_wins`), if any.
    """
    groups = group_settings(rows)
    labels = backbone_labels(groups)
    wins = _wins(groups)
    beaten = {_win_key(w) for w in wins}
    lines = [
        _caption(groups),
        "",
        "| backbone | task | protocol | label fraction | noise | robust | metric | mean ± std | n | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for members in groups:
        first = members[0]
        flag = f" {RANDOM_BETTER}" if _win_key(first) in beaten else ""
        lines.append(
            f"| {labels[first['backbone'], first['backbone_sha256']]} | {_cells(first, members)} "
            f"| {_value(members)}{flag} | {_n(members)} | {format_seeds(r['seed'] for r in members)} |"
        )
    return "\n".join(lines) + "\n" + wins_note(wins)


def compare(rows: Iterable[dict[str, Any]]) -> str:
    """A markdown table with one column per backbone (in order of appearance), to compare them side by side.

    Args:
        rows: results rows of one or more backbones; one backbone name must mean one file
            (one backbone_sha256), else the columns would silently pool different weights.

    Returns:
        Markdown text: the caption and one line per setting; a cell reads `mean ± std (n)`, or `–`
        when that backbone has no result for the setting, and the seeds column names the seeds (per
        backbone where they differ). Settings where a random init beat a pretrained backbone are
        marked and listed under the table (`random_init_wins`).
    """
    rows = list(rows)
    groups = group_settings(rows)
    files: dict[str, set[str]] = {}
    for members in groups:
        files.setdefault(members[0]["backbone"], set()).add(members[0]["backbone_sha256"])
    for name, shas in files.items():
        if len(shas) > 1:
            raise ValueError(
                f"backbone name {name!r} stands for {len(shas)} different files (backbone_sha256 "
                f"{sorted(shas)}); give each backbone its own name to compare them, or use summarise"
            )
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    wins = _wins(groups)
    beaten = {_win_key(w) for w in wins}
    table: dict[tuple, dict[str, str]] = {}
    seeds: dict[tuple, dict[str, str]] = {}
    labels: dict[tuple, str] = {}
    for members in groups:
        first = members[0]
        key = tuple(first[k] for k in SETTING if k not in ("backbone", "backbone_sha256"))
        labels.setdefault(key, _cells(first, members))
        flag = f" {RANDOM_BETTER}" if _win_key(first) in beaten else ""
        table.setdefault(key, {})[first["backbone"]] = f"{_value(members)} ({_n(members)}){flag}"
        seeds.setdefault(key, {})[first["backbone"]] = format_seeds(r["seed"] for r in members)
    lines = [
        _caption(groups),
        "",
        "| task | protocol | label fraction | noise | robust | metric | " + " | ".join(backbones) + " | seeds |",
        "|---|---|---|---|---|---|" + "---|" * (len(backbones) + 1),
    ]
    for key in sorted(table):
        own = seeds[key]
        seed_cell = (next(iter(own.values())) if len(set(own.values())) == 1
                     else "; ".join(f"{b}: {own[b]}" for b in backbones if b in own))
        lines.append(f"| {labels[key]} | " + " | ".join(table[key].get(b, "–") for b in backbones)
                     + f" | {seed_cell} |")
    return "\n".join(lines) + "\n" + wins_note(wins)


def is_random_init(row: dict[str, Any]) -> bool:
    """Whether a row measured a random init: no file, named `random` or `random-<what it is the twin of>`."""
    return not row["backbone_sha256"] and (row["backbone"] == "random" or row["backbone"].startswith("random-"))


def _win_key(row: dict[str, Any]) -> tuple:
    return tuple(row[k] for k in SETTING)


def random_init_wins(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The settings on which a random init scores better than a pretrained backbone, mean over seeds.

    A pretrained backbone (a row with a `backbone_sha256`) named X is compared with `random` (the
    suite's random init) and with its own twin `random-X`, on every setting of a score (not
    `NOT_SCORES`); better is higher, lower for `LOWER_IS_BETTER`. Ties are not wins.

    Returns:
        One dict per (pretrained backbone, setting, random init that beat it): the `SETTING` keys,
        `mean` and `n` of the backbone, and `random`, `random_mean`, `random_n` of the random init;
        in table order.
    """
    return _wins(group_settings(rows))


def _wins(groups: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """`random_init_wins` of rows already grouped by `group_settings`."""
    by_setting: dict[tuple, list[Sequence[dict[str, Any]]]] = {}
    for members in groups:
        if members[0]["metric"] not in NOT_SCORES:
            by_setting.setdefault(_win_key(members[0])[2:], []).append(members)
    wins = []
    for members_list in by_setting.values():
        randoms = [m for m in members_list if is_random_init(m[0])]
        for own in (m for m in members_list if m[0]["backbone_sha256"]):
            first, mean = own[0], statistics.fmean(r["value"] for r in own)
            sign = -1.0 if first["metric"] in LOWER_IS_BETTER else 1.0
            for twin in randoms:
                if twin[0]["backbone"] not in ("random", f"random-{first['backbone']}"):
                    continue  # another backbone's twin: another architecture
                random_mean = statistics.fmean(r["value"] for r in twin)
                if sign * random_mean > sign * mean:
                    wins.append({**{k: first[k] for k in SETTING}, "mean": mean, "n": len(own),
                                 "random": twin[0]["backbone"], "random_mean": random_mean, "random_n": len(twin)})
    return wins


def setting_label(row: dict[str, Any]) -> str:
    """`task/protocol[@fraction][ noise kind rate][ + robust] metric`, e.g. `digits/linear@0.1 top1`."""
    return (f"{row['task']}/{row['protocol']}" + (f"@{row['label_fraction']:g}" if row["label_fraction"] < 1 else "")
            + ("" if row["noise_kind"] == "none" else f" {row['noise_kind']} {row['noise_rate']:g}")
            + ("" if row["robust"] == "none" else f" + {row['robust']}") + f" {row['metric']}")


def wins_note(wins: Sequence[dict[str, Any]]) -> str:
    """The paragraph under a table that lists `random_init_wins`; "" when there are none."""
    items = "; ".join(f"{setting_label(w)}: {w['backbone']} {_fmt(w['mean'], w['metric'])} vs {w['random']} "
                      f"{_fmt(w['random_mean'], w['metric'])}" for w in wins)
    return (f"\n{RANDOM_BETTER} A random init scores better than the pretrained backbone (mean over seeds; lower is "
            f"better for {', '.join(LOWER_IS_BETTER)}, higher for the rest) on: {items}.\n") if wins else ""


def write_summary(out_dir: str | Path, rows: Iterable[dict[str, Any]], appendix: str = "") -> Path:
    """Write `summarise(rows)` (plus `appendix`) to `out_dir/summary.md` atomically; returns its path."""
    path = Path(out_dir) / SUMMARY_FILE
    write_atomic(path, (summarise(rows) + appendix).encode())
    return path
