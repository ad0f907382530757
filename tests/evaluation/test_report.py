"""results.jsonl rows (exact keys, round trip, provenance), summary tables (mean ± std, ddof=1, n), plots."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import re
import statistics
import subprocess
from pathlib import Path

import pytest

from ssl_platform.evaluation import report
from ssl_platform.evaluation.report import (
    KEYS,
    append_rows,
    compare,
    file_sha256,
    git_sha,
    make_row,
    read_rows,
    summarise,
    write_plots,
    write_report,
    write_summary,
)

SHA_A, SHA_B = "a" * 64, "b" * 64

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
    "backbone_sha256",
    "git_sha",
}


def rows_for(backbone="random", values=(90.0, 92.0, 97.0), protocol="knn_k20_t0.07", **kw):
    kw.setdefault("git_sha", "c0ffee")
    return [make_row("digits", protocol, "top1", v, backbone, seed, **kw) for seed, v in enumerate(values)]


@pytest.fixture
def fresh_git_sha():
    """git_sha is cached per path: a test that changes a checkout (or PATH) clears it before and after."""
    git_sha.cache_clear()
    yield
    git_sha.cache_clear()


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_rows_have_exactly_the_design_keys_and_no_noise_defaults():
    row = make_row("digits", "linear", "top1", 93.5, "random", 2)
    assert set(row) == EXPECTED_KEYS == set(KEYS)
    assert row["noise_kind"] == "none" and row["robust"] == "none"
    assert row["noise_rate"] == 0.0 and row["noise_rate_realised"] == 0.0 and row["label_fraction"] == 1.0
    assert row["backbone_sha256"] == "" and row["git_sha"] == git_sha()  # random init; this checkout
    json.dumps(row)  # plain JSON types only


def test_rows_carry_the_backbone_file_and_code_version():
    row = make_row("digits", "linear", "top1", 93.5, "simclr", 0, backbone_sha256=SHA_A, git_sha="abc-dirty")
    assert row["backbone_sha256"] == SHA_A and row["git_sha"] == "abc-dirty"
    with pytest.raises(ValueError, match="64 lowercase hex"):
        make_row("digits", "linear", "top1", 93.5, "simclr", 0, backbone_sha256="ABC")


def test_git_sha_of_this_checkout_is_head_plus_dirty(fresh_git_sha):
    root = Path(report.__file__).resolve().parents[2]
    expected = git(root, "rev-parse", "HEAD")
    if git(root, "status", "--porcelain", "--untracked-files=no"):
        expected += "-dirty"
    assert git_sha() == expected and re.fullmatch(r"[0-9a-f]{40}(-dirty)?", git_sha())


def test_git_sha_dirty_only_for_tracked_changes(tmp_path, fresh_git_sha):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert git_sha(tmp_path) == head
    (tmp_path / "new.txt").write_text("untracked files do not change what the code computes")
    git_sha.cache_clear()
    assert git_sha(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_sha(tmp_path) == head, "cached until cache_clear"
    git_sha.cache_clear()
    assert git_sha(tmp_path) == head + "-dirty"


def test_git_sha_unknown_outside_a_checkout_or_without_git(tmp_path, fresh_git_sha, monkeypatch):
    assert git_sha(tmp_path) == "unknown"
    # a directory git ignores (a package pip-installed into a repo's .venv) is not that repo's code
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("venv/\n")
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "m.py").write_text("")
    git(tmp_path, "add", ".gitignore")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    git_sha.cache_clear()  # tmp_path was cached as "unknown" above
    assert git_sha(tmp_path / "venv") == "unknown" and git_sha(tmp_path) != "unknown"
    git_sha.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert git_sha(tmp_path) == "unknown"


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_file_sha256_matches_hashlib(tmp_path, size):
    data = bytes((i * 37 + 11) % 256 for i in range(size))
    path = tmp_path / "backbone.safetensors"
    path.write_bytes(data)
    assert file_sha256(path, chunk_bytes=7) == hashlib.sha256(data).hexdigest() == file_sha256(str(path))


def test_append_and_read_round_trip(tmp_path):
    path = tmp_path / "sub" / "results.jsonl"
    first = rows_for()
    second = rows_for(protocol="linear", noise_kind="symmetric", noise_rate=0.4, noise_rate_realised=0.36)
    append_rows(path, first)
    append_rows(path, second)
    assert read_rows(path) == first + second
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and all(list(json.loads(line)) == list(KEYS) for line in lines)
    assert list(KEYS)[-2:] == ["backbone_sha256", "git_sha"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("noise_rate_realised"), r"missing \['noise_rate_realised'\]"),
        (lambda r: r.update(lr=0.1), r"extra \['lr'\]"),
        (lambda r: r.pop("git_sha"), r"missing \['git_sha'\]"),  # e.g. a results.jsonl from before git_sha
        (lambda r: r.pop("backbone_sha256"), r"missing \['backbone_sha256'\]"),
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


def test_git_sha_is_a_repeat_key_but_mixed_shas_are_reported():
    rows = rows_for(values=(90.0, 92.0, 97.0))
    rows[2]["git_sha"] = "beef-dirty"  # seed 2 re-run after a commit: still a seed of the same setting
    text = summarise(rows)
    assert "| random | digits | knn_k20_t0.07 | 1 | none | none | top1 | 93.00 ± 3.61 | 3 † |" in text
    assert "Code: git `beef-dirty`, `c0ffee`; n marked † pools seeds run at more than one" in text
    assert "| 93.00 ± 3.61 (3 †) |" in compare(rows)
    single = summarise(rows_for())
    assert "Code: git `c0ffee`." in single and "†" not in single and "Backbone sha256" not in single
    with pytest.raises(ValueError, match="appended to one results.jsonl"):
        summarise(rows_for() + rows_for(git_sha="beef"))  # the same seeds at two commits: two runs mixed


def test_backbone_sha256_separates_settings_and_is_named():
    rows = rows_for("simclr", backbone_sha256=SHA_A) + rows_for("simclr", (50.0, 60.0), backbone_sha256=SHA_B)
    text = summarise(rows)
    assert (
        "| simclr (aaaaaaaa) | digits | knn_k20_t0.07 | 1 | none | none | top1 | 93.00 ± 3.61 | 3 |" in text
    )
    assert (
        "| simclr (bbbbbbbb) | digits | knn_k20_t0.07 | 1 | none | none | top1 | 55.00 ± 7.07 | 2 |" in text
    )
    assert f"Backbone sha256: simclr `{SHA_A}`, simclr `{SHA_B}`." in text
    assert "| simclr | digits |" in summarise(rows_for("simclr", backbone_sha256=SHA_A))
    with pytest.raises(ValueError, match=r"'simclr' stands for 2 different files.*own name"):
        compare(rows)
    rows = rows_for("simclr", backbone_sha256=SHA_A) + rows_for("mae", (50.0, 60.0), backbone_sha256=SHA_B)
    assert "| top1 | 93.00 ± 3.61 (3) | 55.00 ± 7.07 (2) |" in compare(rows)


# ---- plots ---------------------------------------------------------------------------------------

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
    """mean, sample std (ddof=1) and n of `value`, and the mean realised rate, by explicit loops."""
    chosen = [r for r in rows if all(r[k] == v for k, v in where.items())]
    n = len(chosen)
    mean = sum(r["value"] for r in chosen) / n
    std = math.sqrt(sum((r["value"] - mean) ** 2 for r in chosen) / (n - 1)) if n > 1 else math.nan
    return mean, std, n, sum(r["noise_rate_realised"] for r in chosen) / n


def read_csv(png):
    with png.with_suffix(".csv").open() as f:
        lines = list(csv.DictReader(f))
    assert lines and list(lines[0]) == list(report.CSV_COLUMNS)
    return lines


def check_csv_against_rows(png, rows, backbones=None, task="digits", metric="top1"):
    """Every CSV line equals a naive aggregate of the rows it stands for; returns the CSV lines.

    backbones: CSV backbone label -> the row keys it stands for (default: the label is the name).
    """
    lines = read_csv(png)
    for line in lines:
        mean, std, n, realised = naive(
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
    return lines


def check_png(png):
    from matplotlib.image import imread

    assert png.read_bytes()[:8] == PNG_MAGIC
    height, width, channels = imread(png).shape
    assert height > 200 and width > 300 and channels in (3, 4)


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib Figure behind every PNG written, by file name."""
    seen, save = {}, report._save

    def spy(fig, png, points):
        seen[png.name] = fig
        return save(fig, png, points)

    monkeypatch.setattr(report, "_save", spy)
    return seen


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

    written = write_report(tmp_path / "none", rows_for())
    assert written["plots"] == [] and "## Plots\n\nNone: a plot needs" in written["summary"].read_text()
    assert write_summary(tmp_path / "plain", rows_for()).read_text() == summarise(rows_for())
