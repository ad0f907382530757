"""`docs/adding_a_method.md` is true: its worked example (VICReg) runs as written.

The page's code blocks, each titled with the file it belongs in, are written into a temporary
package (the method could not be added to `ssl_platform` itself from a test), allowed as the user's
own components, tested with the page's own test, and pretrained for a few steps with the page's
debug recipe through the real engine. The hook table is checked against `Method` itself.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import torch

from ssl_platform import pretrain, trust
from ssl_platform.methods import METHODS, Method

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "adding_a_method.md"
BLOCK = re.compile(r'```(\w+) title="([^"]+)"\n(.*?)```', re.DOTALL)
EXAMPLE = "sslp_docs_example"  # the temporary package standing in for ssl_platform.methods


def blocks() -> dict[str, str]:
    """{title: code} of the page's titled code blocks."""
    return {title: code for _, title, code in BLOCK.findall(PAGE.read_text())}


@pytest.fixture
def example(tmp_path, monkeypatch) -> Path:
    """The page's method as `sslp_docs_example.vicreg`, importable and allowed in recipes."""
    code = blocks()
    package = tmp_path / EXAMPLE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "vicreg.py").write_text(code["ssl_platform/methods/vicreg.py"])
    (package / "test_vicreg.py").write_text(
        code["tests/methods/test_vicreg.py"].replace("ssl_platform.methods.vicreg", f"{EXAMPLE}.vicreg"))
    recipe = tmp_path / "debug.yaml"
    recipe.write_text(code["recipes/vicreg/debug.yaml"].replace("ssl_platform.methods.vicreg", f"{EXAMPLE}.vicreg"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(trust.ENV_ALLOW, raising=False)
    monkeypatch.setattr(trust, "_allowed_by_user", set())
    trust.allow_components([EXAMPLE])
    return tmp_path


def test_the_page_names_the_files_a_method_touches():
    code = blocks()
    assert set(code) == {"ssl_platform/methods/vicreg.py", "ssl_platform/methods/__init__.py",
                         "recipes/vicreg/debug.yaml", "tests/methods/test_vicreg.py"}
    # the registry line's key is the recipe folder and the module name
    assert re.fullmatch(r'\s*"vicreg": VICReg,\s*', code["ssl_platform/methods/__init__.py"])
    assert "vicreg" not in METHODS, "the example is documentation, not a shipped method"


def test_the_pages_own_tests_pass(example):
    module = __import__(f"{EXAMPLE}.test_vicreg", fromlist=["*"])
    tests = [f for name, f in vars(module).items() if name.startswith("test_") and callable(f)]
    assert len(tests) == 2
    for test in tests:
        test()


@pytest.mark.slow
def test_the_pages_recipe_pretrains_through_the_engine(example):
    cfg = pretrain.load_recipe(example / "debug.yaml", [f"train.out_dir={example / 'run'}"])
    result = pretrain.run(cfg)
    run = Path(result["out_dir"])
    assert result["step"] == 3 and (run / "backbone.safetensors").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_the_hook_table_is_the_hooks_method_declares():
    """Every hook `Method` declares is in the page's table, and the table names no other."""
    table = PAGE.read_text().split("## What a method provides", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)\(", table, re.MULTILINE))
    declared = {name for name, member in vars(Method).items()
                if inspect.isfunction(member) and not name.startswith("_")}
    assert documented == declared
