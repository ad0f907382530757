"""Text made from zoo entries: the model card, the zoo page (docs/zoo.md) and `sslp zoo show`
(`sslp zoo list`, which must not wait for torch and timm, is `zoo.listing`).

`timm_code` is the plain timm call that loads an entry's file, printed by `zoo show` and the card to
be pasted; what it prints comes from an index that may be someone else's, so it prints only values
that stay Python literals (`checks.check_entry` has checked the architecture name).
"""

from __future__ import annotations

import keyword
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import yaml

from ssl_platform.checkpoint.atomic import write_atomic
from ssl_platform.evaluation.report import RANDOM_BETTER, SELECTED, format_seeds, setting_label
from ssl_platform.models import backbones  # noqa: F401  (registers our architectures with timm: see _registering_module)
from ssl_platform.zoo.checks import is_remote, weights_file_name
from ssl_platform.zoo.index import INDEX_FILE, ZooEntry, cache_dir, read_index, resolve_zoo
from ssl_platform.zoo.listing import (  # format_list: re-exported, `zoo_card.format_list` as before
    HEADLINE_METRICS,
    format_epochs,
    format_list,  # noqa: F401
    metrics_text,
    size_text,
    text_table,
)

DOCS_COMMAND = "sslp zoo docs"
_SETTING = ("suite", "task", "protocol", "label_fraction", "noise_kind", "noise_rate", "robust", "metric")


def _value(value: float, metric: str) -> str:
    return f"{value:.2f}" if metric == "top1" else f"{value:.3g}"


def _git(entry: ZooEntry) -> str:
    dirty = entry.git_sha.endswith("-dirty")
    return entry.git_sha + (" (uncommitted changes: no commit holds exactly this code)" if dirty else "")


def _result_value(r: dict[str, Any]) -> str:
    """mean ± std; a selected value (λ, C) per seed, never a mean of several."""
    if r["metric"] in SELECTED:
        if r.get("values") is not None:
            return ", ".join(_value(v, r["metric"]) for v in r["values"])
        if r["n"] > 1:  # an index written before the values were kept holds only their mean
            return "– (not recorded per seed)"
        if r["mean"] == 0:  # such an index rounded it to 4 decimals: a λ of 1e-05 reads 0
            return "0 (as stored: rounded to 4 decimals)"
    return _value(r["mean"], r["metric"]) + ("" if r.get("std") is None else f" ± {_value(r['std'], r['metric'])}")


def _key(result: dict[str, Any]) -> tuple:
    return tuple(result.get(k) for k in _SETTING)


def _flagged(entry: ZooEntry) -> set[tuple]:
    """The `_key` of each setting where a random init scored better."""
    return {_key(w) for w in entry.random_init_better or ()}


def _random_lines(entry: ZooEntry) -> list[str]:
    """One line per setting where a random init scored better (`ZooEntry.random_init_better`)."""
    return [f"{w['suite']}: {setting_label(w)}: {_value(w['mean'], w['metric'])} vs {w['random']} "
            f"{_value(w['random_mean'], w['metric'])}" for w in entry.random_init_better or ()]


def _versus_random(entry: ZooEntry) -> str:
    """`zoo show`'s line on the random-init comparison."""
    if entry.random_init_better is None:
        return "not compared (publish with a `sslp eval ... backbone=random:RUN_DIR` evaluation beside the run's)"
    if not entry.random_init_better:
        return "no random init scores better on any setting compared"
    return f"{RANDOM_BETTER} a random init scores better on {len(entry.random_init_better)} setting(s), listed below"


def _registering_module(architecture: str) -> str:
    """The module that registers `architecture` with timm when it is not timm's own, else ""."""
    try:
        module = timm.models.model_entrypoint(architecture).__module__
    except (KeyError, RuntimeError):  # not registered here: the call will say so
        return ""
    return "" if module.startswith("timm.") else module


def timm_code(entry: ZooEntry, file: str) -> str | None:
    """Plain timm code, to paste, that builds the entry's model with the weights in `file` and its
    preprocessing (`pretrained_cfg`); None when plain timm cannot build it (`entry.timm_note` says why).

    `num_classes=0` in both the call and the overlay makes timm's load strict. A kwarg whose name is not a
    Python identifier (an index may say anything) gives None rather than code that does something else.
    """
    if entry.timm_kwargs is None or not all(k.isidentifier() and not keyword.iskeyword(k) for k in entry.timm_kwargs):
        return None
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.timm_kwargs.items()}
    preprocess = ("input_size", "mean", "std", "interpolation", "crop_pct")
    overlay = {"file": file, "num_classes": 0, **{k: v for k, v in entry.pretrained_cfg().items() if k in preprocess}}
    module = _registering_module(entry.architecture)
    return "\n".join([
        "import timm",
        *([f"import {module}  # registers {entry.architecture} with timm"] if module else []),
        f"model = timm.create_model({entry.architecture!r}, pretrained=True, num_classes="
        + ", ".join(["0", *(f"{k}={v!r}" for k, v in kwargs.items())]) + ",",
        "    pretrained_cfg_overlay=dict(" + ", ".join(f"{k}={v!r}" for k, v in overlay.items()) + "))",
    ])


def _weights_path(entry: ZooEntry, zoo: str) -> tuple[str, str]:
    """(where the entry's file is, or lands once pulled; how to check or fetch it)."""
    if is_remote(zoo) or entry.url:
        return (str(cache_dir() / "files" / weights_file_name(entry.name, entry.sha256)),
                f"`sslp zoo pull {entry.name}` downloads and verifies it there")
    return os.path.abspath(Path(zoo) / entry.file), f"`sslp zoo verify {entry.name}` checks its sha256"


def format_show(entry: ZooEntry, zoo: str) -> str:
    """`sslp zoo show NAME`: every field but the recipe, the plain timm call, and every result with its seeds."""
    file, check = _weights_path(entry, zoo)
    code = timm_code(entry, file)
    input_ = (f"{entry.input_size} mean {entry.mean} std {entry.std}, {entry.interpolation} resize"
              if entry.input_size else "not an image backbone")
    fields = [
        ("name", entry.name), ("method", entry.method), ("architecture", entry.architecture),
        ("arch_kwargs", entry.arch_kwargs), ("input", input_), ("num_features", entry.num_features),
        ("data", entry.pretrain_data), ("epochs / steps", f"{format_epochs(entry.epochs)} / {entry.steps}"),
        ("recipe", entry.recipe_name), ("file", f"{entry.file} ({size_text(entry.size_bytes)})"),
        ("sha256", entry.sha256), ("url", entry.url or f"beside {INDEX_FILE}"), ("git sha", _git(entry)),
        ("published", entry.created), ("license", entry.license),
        ("card", f"{zoo}/{entry.card}" if entry.card else "–"),
        ("load", f"from ssl_platform.zoo import load_backbone; backbone = load_backbone({entry.name!r})"),
        ("timm", "yes: the code below" if code else f"no: {entry.timm_note}"),
        ("vs random init", _versus_random(entry)),
    ]
    width = max(len(k) for k, _ in fields)
    text = "".join(f"{k.ljust(width)}  {v}\n" for k, v in fields)
    if code:  # flush left, so that it pastes as it is
        text += f"\n# plain timm; it does not check the file: {check}\n{code}\n"
    flagged = _flagged(entry)
    rows = [(r["suite"], r["task"], r["protocol"], f"{r['label_fraction']:g}",
             "none" if r["noise_kind"] == "none" else f"{r['noise_kind']} {r['noise_rate']:g}", r["robust"],
             r["metric"], _result_value(r) + (f" {RANDOM_BETTER}" if _key(r) in flagged else ""),
             str(r["n"]), format_seeds(r["seeds"]) if r.get("seeds") is not None else "?") for r in entry.results]
    if not rows:
        return text + "\nno evaluation results recorded\n"
    text += "\n" + text_table(("suite", "task", "protocol", "fraction", "noise", "robust", "metric", "mean ± std", "n",
                           "seeds"), rows)
    if any(r.get("seeds") is None for r in entry.results):
        text += ("?: seeds not recorded (published before the index kept them; a setting listed twice comes from "
                 "two evaluation directories); re-publish to record them\n")
    selected = [m for m in SELECTED if any(r["metric"] == m for r in entry.results)]
    if selected:
        text += f"{' and '.join(selected)}: the value each seed selected, in the order of its seeds; never averaged\n"
    if entry.random_init_better:
        text += (f"\n{RANDOM_BETTER} a random init of the same architecture scores better (mean over seeds) on:\n"
                 + "".join(f"  {line}\n" for line in _random_lines(entry)))
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
    code = timm_code(entry, entry.file)
    if code is None:
        return lines + [f"Plain timm: not possible, {entry.timm_note}.", ""]
    return lines + [
        (f"As a plain timm model, with `{entry.file}` from the zoo (`sslp zoo pull {entry.name}` downloads and "
         "verifies it and prints its path; `sslp zoo show` prints this call with that path):"),
        "",
        "```python",
        code,
        "```",
        "",
        (f"or `timm.create_model(**ssl_platform.zoo.timm_kwargs(\"{entry.name}\"))`, which pulls and verifies "
         "the file first."),
        "",
    ]


def render_card(entry: ZooEntry, sections: Sequence[tuple[str, str, str, Sequence[str]]]) -> str:
    """The model card: facts, usage, one results section per evaluation (suite, directory, table, plots), recipe."""
    input_ = (f"{' x '.join(map(str, entry.input_size))}, mean {entry.mean}, std {entry.std}, "
              f"{entry.interpolation} resize" if entry.input_size else "not an image backbone")
    lines = [
        _front_matter(entry),
        f"# {entry.name}",
        "",
        (f"{entry.method} pretraining of timm's `{entry.architecture}` on {entry.pretrain_data}: "
         f"{format_epochs(entry.epochs)} epochs, {entry.steps} steps (recipe `{entry.recipe_name}`, below)."),
        "",
        *([f"> {RANDOM_BETTER} **A random init of the same architecture scores better** (mean over seeds) on: "
           + "; ".join(_random_lines(entry)) + ".", ""] if entry.random_init_better else []),
        "| | |",
        "|---|---|",
        f"| architecture | `{entry.architecture}`, create_backbone kwargs `{entry.arch_kwargs}` |",
        f"| input | {input_} |",
        f"| features | {entry.num_features} (pooled, `forward_head(pre_logits=True)`) |",
        f"| file | `{entry.file}`, {size_text(entry.size_bytes)} |",
        f"| sha256 | `{entry.sha256}` |",
        f"| code | git `{entry.git_sha}`{' (uncommitted changes)' if entry.git_sha.endswith('-dirty') else ''} |",
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

    def flag(e: ZooEntry) -> str:
        return f" {RANDOM_BETTER}" if e.random_init_better else ""

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
        lines.append(f"| {card(e)}{flag(e)} | {e.method} | `{e.architecture}` | {e.pretrain_data} "
                     f"| {format_epochs(e.epochs)} "
                     f"| {metrics_text(e, sep='<br>')} | {size_text(e.size_bytes)} | `{e.sha256[:8]}` | {e.license} |")
    if not entries:
        lines.append("| (none yet) | | | | | | | | |")
    lines += ["", ("Metrics: top-1 accuracy in % unless named, with clean labels and no robust loss, at the largest "
              "label fraction measured (`@0.1`: a tenth of the labels). Each card has the full tables, plots "
              "and recipe." + (f" {RANDOM_BETTER}: a random init of the same architecture scores better on some "
                               "setting (listed in the card)." if any(e.random_init_better for e in entries.values())
                               else "")), ""]
    return "\n".join(lines)


def write_docs(zoo: str | Path | None = None, out: str | Path = "docs/zoo.md") -> Path:
    """Regenerate the zoo page from index.json; returns its path."""
    zoo = resolve_zoo(zoo)
    out = Path(out)
    write_atomic(out, docs_page(read_index(zoo), zoo, out).encode())
    return out
