"""PNG plots of results rows, each with the CSV of exactly the numbers it shows.

Two plots per task and metric: the metric against the label noise rate, and against the label
fraction; a line is the mean over seeds with a ±1 std band (sample std, ddof=1, as in the tables of
`report.py`). `output.write_report` writes them beside `summary.md` and links them from it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ssl_platform.checkpoint.io import write_atomic
from ssl_platform.evaluation.report import backbone_labels, group_settings

PLOTS_DIR = "plots"
# bookkeeping values such as the selected "lambda" are tabled but not plotted
PLOT_METRICS = ("top1", "map", "r2", "rmse")
# the columns of every plot's CSV: one line per plotted point
CSV_COLUMNS = (
    "backbone",
    "protocol",
    "robust",
    "noise_kind",
    "noise_rate",
    "noise_rate_realised_mean",
    "label_fraction",
    "mean",
    "std",
    "n",
    "seeds",
)


def _points(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per setting: the CSV columns plus task and metric; std is nan when n = 1, seeds are
    space-separated."""
    groups = group_settings(rows)
    labels = backbone_labels(groups)
    points = []
    for members in groups:
        first, values = members[0], [r["value"] for r in members]
        points.append(
            {
                "task": first["task"],
                "metric": first["metric"],
                "backbone": labels[first["backbone"], first["backbone_sha256"]],
                **{k: first[k] for k in ("protocol", "robust", "noise_kind", "noise_rate", "label_fraction")},
                "noise_rate_realised_mean": statistics.fmean(r["noise_rate_realised"] for r in members),
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else math.nan,  # ddof=1, as the tables
                "n": len(values),
                "seeds": " ".join(str(s) for s in sorted(r["seed"] for r in members)),  # which n
            }
        )
    return points


def _safe_name(task: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", task).strip("._-") or "task"
    # a changed name gets a hash of the original, so "a/b" and "a b" do not overwrite each other
    return safe if safe == task else f"{safe}-{hashlib.sha256(task.encode()).hexdigest()[:8]}"


def _line(point: dict[str, Any]) -> tuple[str, str, str]:
    return point["backbone"], point["protocol"], point["robust"]


# with several backbones: colour says the protocol, line style and marker say the backbone
STYLES = ("o-", "s--", "^:", "D-.")


def _draw(ax: Any, points: list[dict[str, Any]], x: str, label: str, colour: str, style: str = "o-") -> None:
    """One line, mean over seeds, with a ±1 std band (none where n = 1)."""
    points = sorted(points, key=lambda p: p[x])
    xs, means = [p[x] for p in points], [p["mean"] for p in points]
    stds = [0.0 if math.isnan(p["std"]) else p["std"] for p in points]
    ax.plot(xs, means, style, color=colour, label=label, markersize=4)
    ax.fill_between(
        xs,
        [m - s for m, s in zip(means, stds)],
        [m + s for m, s in zip(means, stds)],
        color=colour,
        alpha=0.2,
        linewidth=0,
    )


def _draw_lines(
    ax: Any, points: list[dict[str, Any]], x: str, lines: list[tuple], with_backbone: bool
) -> None:
    backbones = list(dict.fromkeys(line[0] for line in lines))
    protocols = sorted({line[1:] for line in lines})
    for line in lines:
        mine = [p for p in points if _line(p) == line]
        if mine:
            backbone, protocol, robust = line
            name = f"{backbone} {protocol}" if with_backbone else protocol
            name += "" if robust == "none" else f" + {robust}"
            # colour by (protocol, robust) index: the same colour for a protocol in every panel and backbone
            colour = f"C{protocols.index(line[1:]) % 10}"
            _draw(ax, mine, x, name, colour, STYLES[backbones.index(backbone) % len(STYLES)])


def _save(fig: Any, png: Path, points: list[dict[str, Any]]) -> Path:
    """Write the PNG and, beside it, the CSV of exactly its points (each atomically: a killed run leaves
    the old plot or the new one, never half a file)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    image = io.BytesIO()
    FigureCanvasAgg(fig).print_png(image)
    write_atomic(png, image.getvalue())
    order = sorted(points, key=lambda p: (*_line(p), p["noise_kind"], p["noise_rate"], p["label_fraction"]))
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(CSV_COLUMNS)
    writer.writerows([p[k] for k in CSV_COLUMNS] for p in order)
    write_atomic(png.with_suffix(".csv"), table.getvalue().encode())
    return png


def _ylabel(metric: str) -> str:
    return f"{metric} (%)" if metric == "top1" else metric


def _noise_plot(png: Path, task: str, metric: str, points: list[dict[str, Any]]) -> list[Path]:
    """Metric against nominal noise rate, a panel per noise kind sharing the clean point; [] if < 2 rates."""
    from matplotlib.figure import Figure

    noisy = {p["label_fraction"] for p in points if p["noise_kind"] != "none"}
    if not noisy:
        return []
    fraction = 1.0 if 1.0 in noisy else max(noisy)
    points = [p for p in points if p["label_fraction"] == fraction]
    if len({p["noise_rate"] for p in points}) < 2:
        return []
    kinds = sorted({p["noise_kind"] for p in points} - {"none"})
    lines = sorted({_line(p) for p in points})
    fig = Figure(figsize=(1.5 + 4.0 * len(kinds), 3.8), layout="constrained")
    axes = fig.subplots(1, len(kinds), sharey=True, squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        panel = [p for p in points if p["noise_kind"] in ("none", kind)]
        _draw_lines(ax, panel, "noise_rate", lines, len({line[0] for line in lines}) > 1)
        rates = sorted({p["noise_rate"] for p in panel})
        realised = [
            statistics.fmean(p["noise_rate_realised_mean"] for p in panel if p["noise_rate"] == r)
            for r in rates
        ]
        # "symmetric 0.4" flips fewer than 40% of labels when a flip may land on the true class
        ax.set_xticks(rates, [f"{r:g}\n({q:.3f})" for r, q in zip(rates, realised)])
        ax.set(title=kind, xlabel="noise rate: nominal (realised)")
    axes[0].set_ylabel(_ylabel(metric))
    handles, names = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        more = ax.get_legend_handles_labels()
        handles += [h for h, n in zip(*more) if n not in names]
        names += [n for n in more[1] if n not in names]
    # below the panels, two columns: with several backbones the names are long, and a legend at the
    # side of a one-panel figure squeezed the panel and cut the title
    fig.set_size_inches(max(8.0, fig.get_figwidth()), fig.get_figheight() + 0.2 * ((len(names) + 1) // 2))
    fig.legend(handles, names, loc="outside lower center", ncols=2, fontsize="small")
    fig.suptitle(f"{task}: {metric} at label fraction {fraction:g}, mean ± 1 std over seeds (ddof=1)")
    return [_save(fig, png, points)]


def _fraction_plot(png: Path, task: str, metric: str, points: list[dict[str, Any]]) -> list[Path]:
    """Metric against label fraction (log x), noise-free rows only; [] if < 2 fractions."""
    from matplotlib.figure import Figure

    points = [p for p in points if p["noise_kind"] == "none"]
    fractions = sorted({p["label_fraction"] for p in points})
    if len(fractions) < 2:
        return []
    lines = sorted({_line(p) for p in points})
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    ax = fig.subplots()
    _draw_lines(ax, points, "label_fraction", lines, len({line[0] for line in lines}) > 1)
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.minorticks_off()
    ax.set(xlabel="label fraction (log scale)", ylabel=_ylabel(metric))
    title = f"{task}: {metric} without label noise, mean ± 1 std over seeds (ddof=1)"
    ax.set_title(title, fontsize="medium")
    fig.legend(loc="outside right upper", fontsize="small")
    return [_save(fig, png, points)]


def write_plots(out_dir: str | Path, rows: Iterable[dict[str, Any]]) -> list[Path]:
    """PNG plots of every task's `PLOT_METRICS`, each with the CSV of its numbers (`CSV_COLUMNS`) beside it.

    `plots/<task>-<metric>-noise.png`: metric against nominal noise rate, one panel per noise kind,
    all sharing the noise-free point at rate 0; at label fraction 1, or the largest one with noisy
    rows. Realised rates (mean over seeds) are under the ticks and in the CSV. A robust method's
    line has only the rates it was run at. `plots/<task>-<metric>-fraction.png`: metric against
    label fraction, log x, noise-free rows. Lines are (backbone if several, protocol, robust), mean
    over seeds with a ±1 std band (ddof=1). A plot with fewer than two x values is not written.

    Returns:
        The PNGs written, in a deterministic order; each CSV is `png.with_suffix(".csv")`.
    """
    points = _points(rows)
    written = []
    for task in sorted({p["task"] for p in points}):
        for metric in PLOT_METRICS:
            mine = [p for p in points if p["task"] == task and p["metric"] == metric]
            stem = f"{_safe_name(task)}-{metric}"
            if mine:
                written += _noise_plot(Path(out_dir) / PLOTS_DIR / f"{stem}-noise.png", task, metric, mine)
                written += _fraction_plot(
                    Path(out_dir) / PLOTS_DIR / f"{stem}-fraction.png", task, metric, mine
                )
    return written
