"""Recipes stored in the shipped zoo still load: moving a module must not break a published run.

Each zoo entry keeps the recipe that trained it (`zoo/index.json`); a user reproduces the entry with
it, so every `_component_` path in it must keep resolving, under the same trust rules as any recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ssl_platform import pretrain

INDEX = Path(__file__).resolve().parents[2] / "zoo" / "index.json"
ENTRIES = json.loads(INDEX.read_text())["models"]


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_the_stored_recipe_of_each_shipped_entry_still_validates(name, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(ENTRIES[name]["recipe"]))
    cfg = pretrain.load_recipe(recipe, [f"train.out_dir={tmp_path / 'run'}"])
    assert cfg.method._component_ == ENTRIES[name]["recipe"]["method"]["_component_"]
