"""Plots: each PNG's CSV against naive aggregates of the rows, what the figures draw, file names, links."""

from __future__ import annotations

import csv
import itertools
import math
import re
from pathlib import Path

import pytest

from ssl_platform.evaluation import plots as plots_lib
from ssl_platform.evaluation.output import write_report
from ssl_platform.evaluation.plots import write_plots
from ssl_platform.evaluation.report import make_row, summarise, write_summary

SHA_A, SHA_B = "a" * 64, "b" * 64
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KNN = "knn_k20_t0.07"


def sweep(
    task="digits",
    backbones=(("random", ""),),
    seeds=(0, 1, 2),
    fractions=(0.1, 0.5, 1.0),
    noise_fractions=(0.5, 1.0),
    kinds=("symmetric", "asymmetric"),
    rates=(0.2, 0.4),
):
    """Rows of a small eval: clean at every fraction, noisy (with ELR for the linear probe) at some."""
    settings = []  # (protocol, robust, metric, seed, noise settings)
    for seed in seeds:
        for fraction in fractions:
            clean = {"label_fraction": fraction}
            settings += [
                (p, "none", m, seed, clean)
                for p, m in ((KNN, "top1"), ("linear", "top1"), ("linear", "lambda"))
            ]
        for fraction, kind, rate in itertools.product(noise_fractions, kinds, rates):
            noise = {"label_fraction": fraction, "noise_kind": kind, "noise_rate": rate}
            noise["noise_rate_realised"] = round(rate * 0.9 + 0.01 * seed, 6)
            settings += [
                (p, r, "top1", seed, noise) for p, r in ((KNN, "none"), ("linear", "none"), ("linear", "elr"))
            ]
    rows = []
    for i, ((name, sha), (protocol, robust, metric, seed, noise)) in enumerate(
        itertools.product(backbones, settings)
    ):
        value = 40.0 + (i * 7919 % 97) * 0.5  # spread values so that a wrong mean or std shows
        rows.append(
            make_row(
                task,
                protocol,
                metric,
                value,
                name,
                seed,
                robust=robust,
                backbone_sha256=sha,
                git_sha="c0ffee",
                **noise,
            )
        )
    return rows


def naive(rows, **where):
    """mean, sample std (ddof=1) and n of `value`, the mean realised rate and the seeds, by explicit loops."""
    chosen = [r for r in rows if all(r[k] == v for k, v in where.items())]
    n = len(chosen)
    mean = sum(r["value"] for r in chosen) / n
    std = math.sqrt(sum((r["value"] - mean) ** 2 for r in chosen) / (n - 1)) if n > 1 else math.nan
    return mean, std, n, sum(r["noise_rate_realised"] for r in chosen) / n, sorted(r["seed"] for r in chosen)


def read_csv(png):
    with png.with_suffix(".csv").open() as f:
        lines = list(csv.DictReader(f))
    assert lines and list(lines[0]) == list(plots_lib.CSV_COLUMNS)
    return lines


def check_csv_against_rows(png, rows, backbones=None, task="digits", metric="top1"):
    """Every CSV line equals a naive aggregate of the rows it stands for; returns the CSV lines.

    backbones: CSV backbone label -> the row keys it stands for (default: the label is the name).
    """
    lines = read_csv(png)
    for line in lines:
        mean, std, n, realised, seeds = naive(
            rows,
            task=task,
            metric=metric,
            **(backbones or {}).get(line["backbone"], {"backbone": line["backbone"]}),
            protocol=line["protocol"],
            robust=line["robust"],
            noise_kind=line["noise_kind"],
            noise_rate=float(line["noise_rate"]),
            label_fraction=float(line["label_fraction"]),
        )
        assert float(line["mean"]) == pytest.approx(mean, rel=1e-12)
        assert float(line["std"]) == pytest.approx(std, rel=1e-12, nan_ok=True)
        assert int(line["n"]) == n and float(line["noise_rate_realised_mean"]) == pytest.approx(realised)
        assert [int(s) for s in line["seeds"].split()] == seeds
    return lines


def check_png(png):
    from matplotlib.image import imread

    assert png.read_bytes()[:8] == PNG_MAGIC
    height, width, channels = imread(png).shape
    assert height > 200 and width > 300 and channels in (3, 4)


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib Figure behind every PNG written, by file name."""
    seen, save = {}, plots_lib._save

    def spy(fig, png, points):
        seen[png.name] = fig
        return save(fig, png, points)

    monkeypatch.setattr(plots_lib, "_save", spy)
    return seen


@pytest.mark.slow
def test_plots_show_mean_and_sample_std_per_protocol_and_robust_method(tmp_path, figures):
    rows = sweep()
    plots = write_plots(tmp_path, rows)
    noise, fraction = (
        tmp_path / "plots" / "digits-top1-noise.png",
        tmp_path / "plots" / "digits-top1-fraction.png",
    )
    assert plots == [noise, fraction]  # "lambda" is bookkeeping: not plotted
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        [noise.name, fraction.name, noise.with_suffix(".csv").name, fraction.with_suffix(".csv").name]
    )
    for png in plots:
        check_png(png)

    lines = check_csv_against_rows(noise, rows)
    # label fraction 1 only; the clean point (rate 0) once per clean line, shared by both panels
    assert {float(line["label_fraction"]) for line in lines} == {1.0}
    expected = {(p, "none", "none", 0.0) for p in (KNN, "linear")} | {
        (p, r, k, q)
        for p, r in ((KNN, "none"), ("linear", "none"), ("linear", "elr"))
        for k in ("symmetric", "asymmetric")
        for q in (0.2, 0.4)
    }
    assert {(x["protocol"], x["robust"], x["noise_kind"], float(x["noise_rate"])) for x in lines} == expected
    assert len(lines) == len(expected)

    fig = figures[noise.name]
    assert [ax.get_title() for ax in fig.axes] == ["asymmetric", "symmetric"]
    for ax in fig.axes:
        drawn = {line.get_label(): line for line in ax.get_lines()}
        assert set(drawn) == {KNN, "linear", "linear + elr"}  # one line per (protocol, robust)
        assert list(drawn["linear"].get_xdata()) == [0.0, 0.2, 0.4]
        assert list(drawn["linear + elr"].get_xdata()) == [0.2, 0.4]  # ELR was only run on noisy labels
        kind = ax.get_title()
        clean = {"metric": "top1", "protocol": "linear", "robust": "none", "label_fraction": 1.0}
        want = [
            naive(rows, noise_kind=k, noise_rate=q, **clean)[0]
            for k, q in (("none", 0.0), (kind, 0.2), (kind, 0.4))
        ]
        assert list(drawn["linear"].get_ydata()) == pytest.approx(want)
        realised = naive(rows, metric="top1", noise_kind=kind, noise_rate=0.4, label_fraction=1.0)[3]
        assert f"0.4\n({realised:.3f})" in [t.get_text() for t in ax.get_xticklabels()]

    lines = check_csv_against_rows(fraction, rows)
    assert {(x["protocol"], x["robust"], x["noise_kind"]) for x in lines} == {
        (KNN, "none", "none"),
        ("linear", "none", "none"),
    }
    assert sorted({float(x["label_fraction"]) for x in lines}) == [0.1, 0.5, 1.0] and len(lines) == 6
    (ax,) = figures[fraction.name].axes
    assert ax.get_xscale() == "log" and {line.get_label() for line in ax.get_lines()} == {KNN, "linear"}


def test_noise_plot_uses_the_largest_fraction_with_noise_and_single_seeds_have_no_std(tmp_path):
    rows = sweep(seeds=(0,), noise_fractions=(0.5,), kinds=("symmetric",))
    noise, _ = write_plots(tmp_path, rows)
    lines = check_csv_against_rows(noise, rows)
    assert {float(x["label_fraction"]) for x in lines} == {0.5}
    assert all(x["n"] == "1" and math.isnan(float(x["std"])) for x in lines)
    check_png(noise)


@pytest.mark.parametrize(
    "kw",
    [
        {"fractions": (1.0,), "noise_fractions": ()},  # one clean point: nothing to plot
        {"fractions": (), "rates": (0.4,)},  # one noise rate and no clean point
    ],
)
def test_plots_need_two_x_values(tmp_path, kw):
    assert write_plots(tmp_path, sweep(**kw)) == [] and not (tmp_path / "plots").exists()


def test_only_the_plots_with_two_x_values_are_written(tmp_path):
    assert write_plots(tmp_path, sweep(noise_fractions=())) == [
        tmp_path / "plots" / "digits-top1-fraction.png"
    ]
    plots = write_plots(tmp_path / "b", sweep(fractions=(1.0,), rates=(0.4,)))
    assert plots == [tmp_path / "b" / "plots" / "digits-top1-noise.png"]  # clean 0.0 and 0.4: two rates


def test_plot_file_names_are_safe_and_distinct(tmp_path):
    rows = (
        sweep("a/b c", noise_fractions=())
        + sweep("a_b_c", noise_fractions=())
        + sweep("..", noise_fractions=())
    )
    plots = write_plots(tmp_path, rows)
    assert len(plots) == len({p.name for p in plots}) == 3
    assert all(
        p.parent == tmp_path / "plots" and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*\.png", p.name)
        for p in plots
    )
    assert tmp_path / "plots" / "a_b_c-top1-fraction.png" in plots  # a safe name is kept as it is
    assert write_plots(tmp_path, rows) == plots  # deterministic


def test_plots_of_several_backbones_name_them(tmp_path, figures):
    rows = sweep(backbones=(("simclr", SHA_A), ("mae", SHA_B)), noise_fractions=())
    (fraction,) = write_plots(tmp_path, rows)
    lines = check_csv_against_rows(fraction, rows)
    assert {x["backbone"] for x in lines} == {"simclr", "mae"}
    assert {line.get_label() for line in figures[fraction.name].axes[0].get_lines()} == {
        f"{b} {p}" for b in ("simclr", "mae") for p in (KNN, "linear")
    }
    # one name, two files: the short sha tells the lines apart
    rows = sweep(backbones=(("simclr", SHA_A), ("simclr", SHA_B)), noise_fractions=())
    (fraction,) = write_plots(tmp_path / "same", rows)
    names = {f"simclr ({sha[:8]})": {"backbone": "simclr", "backbone_sha256": sha} for sha in (SHA_A, SHA_B)}
    lines = check_csv_against_rows(fraction, rows, names)
    assert {x["backbone"] for x in lines} == {"simclr (aaaaaaaa)", "simclr (bbbbbbbb)"}


def test_write_report_links_every_plot_from_the_summary(tmp_path):
    rows = sweep()
    written = write_report(tmp_path, rows)
    assert written["summary"] == tmp_path / "summary.md" and len(written["plots"]) == 2
    text = written["summary"].read_text()
    assert text.startswith(summarise(rows)) and "\n## Plots\n" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == [p.relative_to(tmp_path).as_posix() for p in written["plots"]]
    assert all(
        (tmp_path / link).is_file() and (tmp_path / link).with_suffix(".csv").is_file() for link in links
    )
    assert all(f"]({Path(link).with_suffix('.csv').as_posix()})" in text for link in links)

    flat = sweep(fractions=(1.0,), noise_fractions=())  # nothing to plot
    written = write_report(tmp_path / "none", flat)
    assert written["plots"] == [] and "## Plots\n\nNone: a plot needs" in written["summary"].read_text()
    assert write_summary(tmp_path / "plain", flat).read_text() == summarise(flat)
