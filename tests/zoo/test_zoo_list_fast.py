"""`sslp zoo list` answers without importing torch, timm or sklearn (importing them alone takes seconds on
a small machine), and `ssl_platform.zoo`'s public names, imported on first use, are the ones its
TYPE_CHECKING block declares."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ssl_platform.zoo
from ssl_platform.cli import main

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "zoo"
HEAVY = ("torch", "timm", "sklearn", "torch_geometric", "torchvision")  # top-level packages `zoo list` must not import


def imported_modules(importtime_log: str) -> set[str]:
    """The modules named by `python -X importtime`'s lines (`import time: self | cumulative | name`)."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")}


@pytest.mark.slow
def test_zoo_list_imports_no_torch_timm_or_sklearn_and_lists_the_shipped_entries():
    env = {k: v for k, v in os.environ.items() if k != "SSL_PLATFORM_ZOO"}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "ssl_platform", "zoo", "list", "--zoo", str(ZOO)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = imported_modules(done.stderr)
    assert "ssl_platform.zoo.index" in imported  # the log is read right: it names what the command imported
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert not heavy, f"`sslp zoo list` imports {heavy[:10]}"
    names = sorted(json.loads((ZOO / "index.json").read_text())["models"])
    lines = done.stdout.splitlines()
    assert lines[0] == f"zoo: {ZOO}" and lines[1].split() == ["name", "method", "architecture", "data", "epochs",
                                                              "size", "metrics"]
    assert [line.split()[0] for line in lines[2:2 + len(names)]] == names
    assert len(names) >= 5  # the shipped zoo, not an empty one


def test_zoo_list_of_a_missing_zoo_is_a_user_error(tmp_path, capsys):
    """A ZooError (a CheckpointError) from the torch-free path still reads as the user's error, not a bug."""
    assert main(["zoo", "list", "--zoo", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: no zoo at {tmp_path}: {tmp_path / 'index.json'} does not exist")


def _type_checking_imports() -> dict[str, str]:
    """name -> module of the imports under `if TYPE_CHECKING:` in ssl_platform/zoo/__init__.py."""
    tree = ast.parse(Path(ssl_platform.zoo.__file__).read_text())
    [block] = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    return {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}


def test_the_lazy_table_declares_what_type_checking_imports():
    declared = _type_checking_imports()
    assert {name: f"ssl_platform.zoo.{sub}" for name, sub in ssl_platform.zoo._SUBMODULE.items()} == declared
    assert sorted(ssl_platform.zoo.__all__) == sorted(declared)
    with pytest.raises(AttributeError, match="module 'ssl_platform.zoo' has no attribute 'nope'"):
        ssl_platform.zoo.nope  # noqa: B018


@pytest.mark.slow  # imports publishing and loading: torch, timm and the methods, seconds on a cold process
def test_every_public_name_resolves_to_the_object_its_module_defines():
    for name, module in _type_checking_imports().items():
        assert getattr(ssl_platform.zoo, name) is getattr(importlib.import_module(module), name), name
    assert set(ssl_platform.zoo.__all__) <= set(dir(ssl_platform.zoo))
