"""The package's layers only point down, its import graph has no cycle, and no module outgrows 400 lines.

The layer table is read from `docs/architecture.md` (section "Layers"), so the document and the code
cannot drift apart: a module no row names fails here, and so does an import that points up a layer,
wherever it is written (inside functions too). Imports are read with `ast`, nothing is imported.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ssl_platform"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# the one module whose own imports may sit inside functions: `sslp --help` must answer without torch
LAZY_ENTRY_POINT = "ssl_platform.cli"


def layer_table(text: str) -> list[tuple[int, list[str]]]:
    """`docs/architecture.md`'s rows `| N | `mod`, `mod` | ... |` of the "Layers" section, bottom first."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            rows.append((int(cells[0]), re.findall(r"`(ssl_platform[\w.]*)`", cells[1])))
    return rows


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its `__init__`)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def resolve(name: str) -> str | None:
    """The module an imported dotted name lives in (`a.b.Class` -> `a.b`), or None outside the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function or class) for every import of the package in `module`."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: `from . import x` inside `package`
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # `from pkg import sub` imports the submodule `pkg.sub`; `from mod import Class` imports `mod`
                names = [f"{base}.{alias.name}" for alias in child.names]
            for name in names:
                target = resolve(name) if name.startswith("ssl_platform") else None
                if target and target != module:
                    found.append((target, child.lineno, nested))
            visit(child, inner)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


@functools.cache
def package_imports() -> dict[str, list[tuple[str, int, bool]]]:
    """`imports_of` every module of the package, parsed once for all the tests below."""
    return {module: imports_of(module) for module in MODULES}


def layer_of(module: str, table: list[tuple[int, list[str]]]) -> int | None:
    """The layer whose longest listed prefix names `module`."""
    best, best_len = None, -1
    for layer, prefixes in table:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    return best


TABLE = layer_table(ARCHITECTURE.read_text())


def test_the_layer_table_is_ordered_and_names_every_module():
    assert [layer for layer, _ in TABLE] == list(range(len(TABLE))), "layers are numbered 0, 1, 2, ... bottom first"
    unplaced = sorted(m for m in MODULES if layer_of(m, TABLE) is None)
    assert not unplaced, f"modules in no layer of docs/architecture.md: {unplaced}; add them to its table"


def test_every_import_points_down_the_layers():
    upward = []
    for module in sorted(MODULES):
        own = layer_of(module, TABLE)
        for target, line, _ in package_imports()[module]:
            if layer_of(target, TABLE) > own:
                upward.append(f"{MODULES[module].relative_to(ROOT)}:{line} ({module}, layer {own}) imports "
                              f"{target} (layer {layer_of(target, TABLE)})")
    assert not upward, "imports that point up a layer:\n  " + "\n  ".join(upward)


def test_no_import_of_the_package_hides_inside_a_function():
    """A function-level import is how a cycle gets dodged; only the CLI keeps them, for start-up time."""
    hidden = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
              for m in sorted(MODULES) if m != LAZY_ENTRY_POINT
              for target, line, nested in package_imports()[m] if nested]
    assert not hidden, "imports of ssl_platform inside functions or classes:\n  " + "\n  ".join(hidden)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph `edges` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    edges: dict[str, set[str]] = defaultdict(set)
    for module in MODULES:
        edges[module] |= {target for target, _, _ in package_imports()[module]}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ssl_platform.evaluation.report import git_sha\n", ["ssl_platform.evaluation.report"]),
        ("def f():\n    from ssl_platform import evaluation\n", ["ssl_platform.evaluation"]),
        ("import ssl_platform.models.backbones as b\n", ["ssl_platform.models.backbones"]),
        ("from ..evaluation import knn\n", ["ssl_platform.evaluation.knn"]),
    ],
)
def test_the_checker_sees_every_form_of_import(tmp_path, monkeypatch, source, expected):
    """The checks above are only as good as this parser: absolute, nested, aliased and relative imports."""
    fake = PACKAGE / "engine" / "trainer.py"
    monkeypatch.setitem(MODULES, "ssl_platform.engine.trainer", tmp_path / "trainer.py")
    (tmp_path / "trainer.py").write_text(source)
    assert [target for target, _, _ in imports_of("ssl_platform.engine.trainer")] == expected
    assert fake.exists()


def test_the_checker_finds_a_cycle_and_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    table = [(0, ["ssl_platform.config"]), (1, ["ssl_platform.models", "ssl_platform.models.x.y"])]
    assert layer_of("ssl_platform.models.backbones", table) == 1 and layer_of("ssl_platform.config", table) == 0
    assert layer_of("ssl_platform.cli", table) is None


MAX_MODULE_LINES = 400  # a module longer than this mixes concerns: split it by concern, not in halves


def test_every_module_stays_under_400_lines():
    long = {str(path.relative_to(ROOT)): n for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) >= MAX_MODULE_LINES}
    assert not long, f"modules of {MAX_MODULE_LINES} lines or more: {long}"
