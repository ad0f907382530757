"""The documentation site builds with `mkdocs build --strict` from a fresh copy of the checkout (any
warning fails: a broken link or anchor, a page missing from the nav, a docstring the API pages cannot
parse), and holds what its nav promises: every page, the API reference of the public entry points, and
the zoo's model cards that docs/zoo.md links to.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from fences import ROOT, copy_checkout, environment

# the entry points docs/api/index.md tells readers to call; their reference must be on the site
API = {
    "api/pretrain/index.html": ["ssl_platform.pretrain.load_recipe", "ssl_platform.pretrain.run"],
    "api/evaluation/index.html": ["ssl_platform.evaluation.suite_validation.load_suite",
                                  "ssl_platform.evaluation.suite.run_suite", "ssl_platform.evaluation.suite.evaluate",
                                  "ssl_platform.evaluation.suite_schema.EvalConfig"],
    "api/zoo/index.html": ["ssl_platform.zoo.load_backbone", "ssl_platform.zoo.publish"],
    "api/checkpoint/index.html": ["ssl_platform.checkpoint.io.load_backbone"],
    "api/data/index.html": ["ssl_platform.data.datasets.ImageFolder", "ssl_platform.data.datasets.Table"],
}


def nav_pages(node) -> list[str]:
    """Every page file named in mkdocs.yml's nav."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for value in node.values() for p in nav_pages(value)]
    return [p for item in node for p in nav_pages(item)]


def test_every_page_under_docs_is_in_the_nav():
    nav = set(nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]))
    assert all((ROOT / "docs" / page).is_file() for page in nav), sorted(p for p in nav if not (ROOT / "docs" / p).is_file())
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    generated_tables = {p for p in pages if p.startswith("img/")}  # result tables, linked from the method pages
    assert pages - generated_tables == nav


@pytest.mark.slow
def test_the_site_builds_strictly_from_a_fresh_copy(tmp_path):
    checkout = copy_checkout(tmp_path / "checkout")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=checkout,
                          env=environment(checkout), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    for page in nav:
        stem = page.removesuffix(".md")
        html = site / (stem.removesuffix("index") if stem.endswith("index") else stem + "/") / "index.html"
        assert html.is_file(), f"{page} was not built ({html})"
    for page, names in API.items():
        html = (site / page).read_text()
        missing = [name for name in names if f'id="{name}"' not in html]
        assert not missing, f"{page} documents no {missing}"
    for card in (ROOT / "zoo" / "cards").iterdir():  # docs/zoo.md links every card
        if (card / "README.md").is_file():
            assert (site / "zoo" / "cards" / card.name / "index.html").is_file(), card.name
