"""`docs/quickstart.md` works as written: its commands, run verbatim in a copy of the checkout on a few
dozen generated images in class folders, pretrain, evaluate against random init, publish to a local
zoo and load back by name; and the recipe it shows is the demo recipe with exactly its marked lines
changed.

The page's recipe itself keeps the run small here (batch 32, 10 epochs: one step per epoch on 48
training images); nothing is overridden.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import yaml
from fences import ROOT, PageRunner, copy_checkout, expected_prints, parse
from PIL import Image

PAGE = "docs/quickstart.md"
DEMO = "recipes/simclr/resnet18_fmnist_1ep.yaml"
CLASSES = {"circle": (220, 40, 40), "square": (40, 180, 60), "stripes": (50, 80, 220)}
PER_CLASS = {"train": 16, "test": 6}


def write_images(root, seed: int = 0) -> None:
    """`root/{train,test}/<class>/NNN.png`: 48 px RGB noise with a coloured shape per class."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    for split, n in PER_CLASS.items():
        for name, rgb in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                image = (rng.random((48, 48, 3)) * 60).astype(np.uint8)
                if name == "circle":
                    shape = (yy - 24) ** 2 + (xx - 24) ** 2 < rng.integers(80, 300)
                elif name == "square":
                    side = rng.integers(8, 20)
                    shape = (abs(yy - 24) < side) & (abs(xx - 24) < side)
                else:
                    shape = (xx // rng.integers(3, 7)) % 2 == 0
                image[shape] = rgb
                Image.fromarray(image).save(folder / f"{i:03d}.png")


def _flat(node, prefix=""):
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def _line_of(lines: list[str], dotted: str) -> str:
    """The line of a recipe file where `section.key` (or a top-level key) is written, inline or not."""
    section, _, key = dotted.partition(".")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{section}:"))
    if not key or "{" in lines[start]:
        return lines[start]
    block = [line for line in lines[start + 1:] if line.startswith(" ")]
    return next(line for line in block if line.strip().startswith(f"{key}:"))


def test_the_pages_recipe_is_the_demo_with_its_changed_lines_marked():
    titled = {f.title: f.code for f in parse(PAGE) if f.title}
    page, demo = yaml.safe_load(titled["my_simclr.yaml"]), yaml.safe_load((ROOT / DEMO).read_text())
    assert "source" in demo and "source" not in page  # the page says it drops the demo's source: block
    demo.pop("source")
    flat_page, flat_demo = _flat(page), _flat(demo)
    changed = {".".join(k.split(".")[:2]) for k in flat_page.keys() | flat_demo.keys()
               if flat_page.get(k) != flat_demo.get(k)}
    assert changed >= {"name", "method.in_chans", "data.dataset", "data.transform", "data.batch_size", "train.epochs"}
    lines = titled["my_simclr.yaml"].splitlines()
    unmarked = [key for key in changed if "changed" not in _line_of(lines, key)]
    assert not unmarked, f"lines that differ from {DEMO} without a `# changed` mark: {unmarked}"
    marked = [line for line in lines if "# changed" in line]
    assert len(marked) == len({_line_of(lines, key) for key in changed}), "a line is marked changed but is not"


@pytest.mark.slow
def test_the_quickstart_runs_verbatim_on_generated_images(tmp_path):
    sandbox = copy_checkout(tmp_path / "checkout")
    write_images(sandbox / "my_images")
    fences = parse(PAGE)
    assert [f.marker for f in fences] == [None] * len(fences), "the quickstart runs whole: no block is left out"
    with PageRunner(sandbox) as runner:
        for fence in fences:
            if fence.lang != "text":
                printed = runner.run(fence)
                for expected in expected_prints(fence):
                    assert expected in printed, f"{fence.where} says it prints {expected!r}; it printed {printed!r}"

    run = sandbox / "runs/my_simclr"
    assert (sandbox / "my_simclr.yaml").read_text() == next(f.code for f in fences if f.title == "my_simclr.yaml")
    rows = [json.loads(line) for line in (run.parent / "eval/my_suite-my_simclr/results.jsonl").open()]
    assert {r["protocol"] for r in rows} == {"knn_k20_t0.07", "linear"}
    assert all(0 <= r["value"] <= 100 for r in rows if r["metric"] == "top1")
    compare = (run.parent / "eval/my_suite-compare/compare.md").read_text()
    assert "| my_simclr | random-my_simclr |" in compare

    sha = hashlib.sha256((run / "backbone.safetensors").read_bytes()).hexdigest()
    index = json.loads((sandbox / "my_zoo/index.json").read_text())
    assert index["models"]["simclr_resnet18.my_images"]["sha256"] == sha
    zoo_rows = [json.loads(line) for line in
                (run.parent / "eval/my_suite-simclr_resnet18.my_images/results.jsonl").open()]
    # the zoo name evaluates the same file: the same sha and the same scores as the run directory
    assert {r["backbone_sha256"] for r in zoo_rows} == {sha}
    assert sorted((r["protocol"], r["metric"], r["value"]) for r in zoo_rows) == sorted(
        (r["protocol"], r["metric"], r["value"]) for r in rows)
