"""Text made from zoo entries: the model card, the zoo page (docs/zoo.md) and `sslp zoo list|show`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ssl_platform.checkpoint import io
from ssl_platform.zoo.checks import is_remote
from ssl_platform.zoo.index import INDEX_FILE, ZooEntry, read_index, resolve_zoo

DOCS_COMMAND = "sslp zoo docs"
# metrics `zoo list` and docs/zoo.md show (`headline`); bookkeeping rows such as "lambda" are left out
HEADLINE_METRICS = ("top1", "map", "r2", "rmse")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} kB"


def _value(value: float, metric: str) -> str:
    return f"{value:.2f}" if metric == "top1" else f"{value:.3g}"


def headline(entry: ZooEntry) -> list[tuple[str, float]]:
    """("task/protocol[@fraction][ metric]", mean) per task, protocol and metric: clean labels, no
    robust loss, at the largest label fraction measured (`@0.1`: a tenth of the labels)."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in entry.results:
        if r["noise_kind"] == "none" and r["robust"] == "none" and r["metric"] in HEADLINE_METRICS:
            key = (r["task"], r["protocol"], r["metric"])
            if key not in best or r["label_fraction"] > best[key]["label_fraction"]:
                best[key] = r
    return [
        (f"{task}/{protocol}" + (f"@{r['label_fraction']:g}" if r["label_fraction"] < 1 else "")
         + ("" if metric == "top1" else f" {metric}"), r["mean"])
        for (task, protocol, metric), r in best.items()
    ]


def _metrics(entry: ZooEntry, limit: int | None = None, sep: str = ", ") -> str:
    shown = headline(entry)[:limit]
    text = sep.join(f"{label} {v:.2f}" if " " not in label else f"{label} {v:.3g}" for label, v in shown)
    return text or "–"


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    """Plain-text columns, for the terminal."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines) + "\n"


def format_list(entries: dict[str, ZooEntry], zoo: str) -> str:
    """`sslp zoo list`: one line per entry with its first three headline results."""
    if not entries:
        return f"the zoo {zoo} has no models yet; publish one with `sslp zoo publish RUN_DIR --name arch.tag`\n"
    rows = [(e.name, e.method, e.architecture, e.pretrain_data, str(e.epochs if e.epochs is not None else "–"),
             _size(e.size_bytes), _metrics(e, 3)) for e in (entries[n] for n in sorted(entries))]
    return f"zoo: {zoo}\n" + _table(("name", "method", "architecture", "data", "epochs", "size", "metrics"), rows)


def format_show(entry: ZooEntry, zoo: str) -> str:
    """`sslp zoo show NAME`: every field but the recipe, and every result."""
    fields = [
        ("name", entry.name), ("method", entry.method), ("architecture", entry.architecture),
        ("arch_kwargs", entry.arch_kwargs), ("input", f"{entry.input_size} mean {entry.mean} std {entry.std}"),
        ("num_features", entry.num_features), ("data", entry.pretrain_data),
        ("epochs / steps", f"{entry.epochs} / {entry.steps}"), ("recipe", entry.recipe_name),
        ("file", f"{entry.file} ({_size(entry.size_bytes)})"), ("sha256", entry.sha256),
        ("url", entry.url or f"beside {INDEX_FILE}"), ("git sha", entry.git_sha), ("published", entry.created),
        ("license", entry.license), ("card", f"{zoo}/{entry.card}" if entry.card else "–"),
        ("timm", f"timm.create_model(**ssl_platform.zoo.timm_kwargs({entry.name!r}))"
         if entry.timm_kwargs is not None else f"no: {entry.timm_note}"),
    ]
    width = max(len(k) for k, _ in fields)
    text = "".join(f"{k.ljust(width)}  {v}\n" for k, v in fields)
    rows = [(r["suite"], r["task"], r["protocol"], f"{r['label_fraction']:g}",
             "none" if r["noise_kind"] == "none" else f"{r['noise_kind']} {r['noise_rate']:g}", r["robust"],
             r["metric"], _value(r["mean"], r["metric"]) + ("" if r["std"] is None else f" ± {_value(r['std'], r['metric'])}"),
             str(r["n"])) for r in entry.results]
    if rows:
        text += "\n" + _table(("suite", "task", "protocol", "fraction", "noise", "robust", "metric", "mean ± std", "n"),
                              rows)
    else:
        text += "\nno evaluation results recorded\n"
    return text


def _front_matter(entry: ZooEntry) -> str:
    """Hugging Face model-card metadata: license, tags and a model-index of the clean results."""
    results = [
        {"task": {"type": "image-classification" if r["metric"] == "top1" else "feature-extraction"},
         "dataset": {"name": r["task"], "type": r["task"]},
         "metrics": [{"type": "accuracy" if r["metric"] == "top1" else r["metric"],
                      "name": f"{r['protocol']} {r['metric']}, {r['label_fraction']:g} of the labels ({r['suite']})",
                      "value": r["mean"]}]}
        for r in entry.results
        if r["noise_kind"] == "none" and r["robust"] == "none" and r["metric"] in HEADLINE_METRICS
    ]
    meta = {"license": entry.license.lower(), "library_name": "timm" if entry.timm_kwargs is not None else "ssl_platform",
            "tags": ["self-supervised", "ssl_platform", entry.method, entry.architecture],
            "model-index": [{"name": entry.name, "results": results}]}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _usage(entry: ZooEntry) -> list[str]:
    lines = [
        "```python",
        "from ssl_platform.zoo import load_backbone",
        f'backbone = load_backbone("{entry.name}")   # weights checked against their sha256',
        f"features = backbone.forward_head(backbone.forward_features(x), pre_logits=True)   # [B, {entry.num_features}]",
        "",
        f'backbone = torch.hub.load("path/to/ssl_platform", "backbone", name="{entry.name}", source="local")',
        "```",
        "",
    ]
    if entry.timm_kwargs is None:
        return lines + [f"Plain timm: not possible, {entry.timm_note}.", ""]
    args = ", ".join(f"{k}={v!r}" for k, v in entry.timm_kwargs.items())
    return lines + [
        "As a plain timm model (`ssl_platform.zoo.timm_kwargs` pulls and verifies the file first):",
        "",
        "```python",
        f'model = timm.create_model(**ssl_platform.zoo.timm_kwargs("{entry.name}"))',
        f'model = timm.create_model("{entry.architecture}", pretrained=True, num_classes=0, {args},',
        f'                          pretrained_cfg_overlay=dict(file="{entry.file}", num_classes=0))',
        "```",
        "",
        *([f"Note: {entry.timm_note}.", ""] if entry.timm_note else []),
    ]


def render_card(entry: ZooEntry, sections: Sequence[tuple[str, str, str, Sequence[str]]]) -> str:
    """The model card: facts, usage, one results section per evaluation (suite, directory, table, plots), recipe."""
    input_ = (f"{' x '.join(map(str, entry.input_size))}, mean {entry.mean}, std {entry.std}"
              if entry.input_size else "not an image backbone")
    lines = [
        _front_matter(entry),
        f"# {entry.name}",
        "",
        (f"{entry.method} pretraining of timm's `{entry.architecture}` on {entry.pretrain_data}: "
         f"{entry.epochs} epochs, {entry.steps} steps (recipe `{entry.recipe_name}`, below)."),
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{entry.architecture}`, create_backbone kwargs `{entry.arch_kwargs}` |",
        f"| input | {input_} |",
        f"| features | {entry.num_features} (pooled, `forward_head(pre_logits=True)`) |",
        f"| file | `{entry.file}`, {_size(entry.size_bytes)} |",
        f"| sha256 | `{entry.sha256}` |",
        f"| code | git `{entry.git_sha}` |",
        f"| published | {entry.created} |",
        f"| license | {entry.license} |",
        "",
        "## Use",
        "",
        *_usage(entry),
        "## Results",
        "",
    ]
    if not sections:
        lines += ["None recorded: evaluate the run (`sslp eval eval/SUITE.yaml backbone=RUN`) and publish again.", ""]
    for suite, directory, table, plots in sections:
        lines += [f"### {suite}", "", f"From the evaluation directory `{directory}`.", "", table.rstrip(), ""]
        lines += [f"![{Path(p).stem}]({p})\n" for p in plots]
    recipe = yaml.safe_dump(entry.recipe, sort_keys=False).rstrip()
    lines += ["## Recipe", "", "```yaml", recipe, "```", ""]
    return "\n".join(lines)


def docs_page(entries: dict[str, ZooEntry], zoo: str, out: Path) -> str:
    """docs/zoo.md: one line per entry, linking its card."""
    index = f"{zoo}/{INDEX_FILE}" if is_remote(zoo) else os.path.relpath(Path(zoo) / INDEX_FILE, out.parent)

    def card(e: ZooEntry) -> str:
        if not e.card:
            return e.name
        link = f"{zoo}/{e.card}" if is_remote(zoo) else os.path.relpath(Path(zoo) / e.card, out.parent)
        return f"[{e.name}]({Path(link).as_posix()})"

    lines = [
        f"<!-- generated by `{DOCS_COMMAND}` from {index}; edits are overwritten -->",
        "# Model zoo",
        "",
        (f"Generated from `{index}` by `{DOCS_COMMAND}` (also run by `sslp zoo publish` on the shipped zoo); "
         "do not edit by hand. Load a model by name with `ssl_platform.zoo.load_backbone(NAME)`, "
         "`sslp eval SUITE backbone=NAME` or `torch.hub.load(REPO, \"backbone\", name=NAME, source=\"local\")`; "
         "`sslp zoo list|show|verify|pull` inspect and fetch. Every file is checked against its sha256 before use."),
        "",
        "| name | method | architecture | data | epochs | metrics | size | sha256 | license |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in (entries[n] for n in sorted(entries)):
        lines.append(f"| {card(e)} | {e.method} | `{e.architecture}` | {e.pretrain_data} | {e.epochs} "
                     f"| {_metrics(e, sep='<br>')} | {_size(e.size_bytes)} | `{e.sha256[:8]}` | {e.license} |")
    if not entries:
        lines.append("| (none yet) | | | | | | | | |")
    lines += ["", ("Metrics: top-1 accuracy in % unless named, with clean labels and no robust loss, at the largest "
              "label fraction measured (`@0.1`: a tenth of the labels). Each card has the full tables, plots "
              "and recipe."), ""]
    return "\n".join(lines)


def write_docs(zoo: str | Path | None = None, out: str | Path = "docs/zoo.md") -> Path:
    """Regenerate the zoo page from index.json; returns its path."""
    zoo = resolve_zoo(zoo)
    out = Path(out)
    io.write_atomic(out, docs_page(read_index(zoo), zoo, out).encode())
    return out
