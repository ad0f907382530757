"""`sslp zoo list`: one line per entry, and the short forms of an entry's facts that the model card,
`sslp zoo show` and docs/zoo.md share (`zoo.card`).

Neither this module nor anything it imports loads torch, timm or sklearn, so that listing a zoo does
not wait seconds for them (`tests/zoo/test_zoo_list_fast.py` checks the imports of `sslp zoo list`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ssl_platform.evaluation.report import RANDOM_BETTER
from ssl_platform.zoo.index import ZooEntry

# metrics `zoo list` and docs/zoo.md show (`headline`); bookkeeping rows such as "lambda" are left out
HEADLINE_METRICS = ("top1", "map", "r2", "rmse")


def size_text(n: int) -> str:
    """A file size for people: 10.7 MB, 92 kB."""
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} kB"


def format_epochs(epochs: Any) -> str:
    """The epochs an entry trained, as recorded: 2, 1.5, 0.2132 (a fraction is never rounded down)."""
    if epochs is None:
        return "–"
    return f"{epochs:.6g}" if isinstance(epochs, int | float) else str(epochs)


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


def metrics_text(entry: ZooEntry, limit: int | None = None, sep: str = ", ") -> str:
    """The first `limit` headline results, `label value` joined by `sep`; "–" when there are none."""
    shown = headline(entry)[:limit]
    text = sep.join(f"{label} {v:.2f}" if " " not in label else f"{label} {v:.3g}" for label, v in shown)
    return text or "–"


def text_table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    """Plain-text columns, for the terminal."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines) + "\n"


def format_list(entries: dict[str, ZooEntry], zoo: str) -> str:
    """`sslp zoo list`: one line per entry with its first three headline results."""
    if not entries:
        return f"the zoo {zoo} has no models yet; publish one with `sslp zoo publish RUN_DIR --name arch.tag`\n"
    rows = [(e.name + (f" {RANDOM_BETTER}" if e.random_init_better else ""), e.method, e.architecture,
             e.pretrain_data, format_epochs(e.epochs), size_text(e.size_bytes), metrics_text(e, 3))
            for e in (entries[n] for n in sorted(entries))]
    text = f"zoo: {zoo}\n" + text_table(("name", "method", "architecture", "data", "epochs", "size", "metrics"), rows)
    if any(e.random_init_better for e in entries.values()):
        text += f"{RANDOM_BETTER} a random init scores better on some setting (`sslp zoo show NAME`)\n"
    return text
