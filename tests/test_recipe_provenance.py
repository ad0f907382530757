"""Every recipe says where its settings come from, and runs with exactly those.

A recipe that claims a paper's setting carries `source:` (the paper and table, or the official config
as `owner/repo@commit:path`) and `paper:`, the values it takes from there. This test computes what
the recipe *effectively* runs with (`recipe_settings.effective_settings`: the recipe, its
components' defaults, the optimizer library's defaults, the engine's lr scaling) and compares. The
evidence behind each `paper:` map is in `docs/recipe_sources.md`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from ssl_platform import config, pretrain
from ssl_platform.config import ConfigError
from ssl_platform.engine.run_dir import recipe_differences
from ssl_platform.recipe_settings import check_against_paper, effective_settings

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").glob("*/*.yaml") if p.name != "debug.yaml")
IDS = [str(p.relative_to(ROOT / "recipes")) for p in RECIPES]


def load(path: Path):
    """The recipe as shipped; values it leaves to its user (`???`, e.g. a data root) get a placeholder."""
    return pretrain.load_recipe(path, [f"{key}=/placeholder" for key in pretrain.required_keys(path)])


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_every_recipe_says_where_its_settings_come_from(path):
    cfg = load(path)
    source = cfg.get("source")
    assert source is not None, f"{path.name}: add a source: block (paper / code, or note for a setting of our own)"
    claims = bool(source.get("paper") or source.get("code"))
    assert claims or source.get("note"), f"{path.name}: source: names no paper, no code and no note"
    if claims:
        assert cfg.get("paper"), f"{path.name}: source: claims a paper but the recipe lists no paper: values"
    else:
        assert not cfg.get("paper"), f"{path.name}: paper: values without a source to take them from"


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_every_recipe_runs_with_its_sources_values(path):
    problems = check_against_paper(load(path))
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_the_launch_command_matches_the_world_size_the_values_assume(path):
    """The header's torchrun command and `source.world_size` agree: the global batch follows from both."""
    header = path.read_text().splitlines()[0]
    nodes = re.search(r"--nnodes[ =](\d+)", header)
    procs = re.search(r"--nproc_per_node[ =](\d+)", header)
    launched = (int(nodes.group(1)) if nodes else 1) * (int(procs.group(1)) if procs else 1)
    assert load(path).source.world_size == launched, header


# -- the checker itself, on recipes written here


def write(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


BASE = yaml.safe_load((ROOT / "recipes/simclr/debug.yaml").read_text())


def test_library_defaults_the_recipe_leaves_unsaid_are_effective_settings(tmp_path):
    recipe = dict(BASE, optimizer={"_component_": "timm.optim.Lamb", "lr": 2.0e-4, "weight_decay": 0.04},
                  source={"paper": "a paper", "world_size": 4})
    settings = effective_settings(pretrain.load_recipe(write(tmp_path, recipe)))
    assert settings["optimizer.max_grad_norm"] == 1.0  # timm's Lamb clips at 1.0 unless told otherwise
    assert settings["batch.global"] == 64 * 4 and settings["optimizer.peak_lr"] == pytest.approx(2.0e-4)
    assert settings["method.temperature"] == 0.5 and settings["method.proj_layers"] == 2  # recipe, then default
    assert settings["train.warmup_epochs"] == 0.5 and settings["train.min_lr"] == 0.0


def test_a_value_that_differs_from_the_source_is_named_with_both_values(tmp_path):
    recipe = dict(BASE, source={"paper": "a paper"},
                  paper={"method.temperature": 0.2, "optimizer.momentum": 0.9, "train.epochs": 2})
    assert check_against_paper(pretrain.load_recipe(write(tmp_path, recipe))) == [
        "paper.method.temperature: the source says 0.2, the recipe runs with 0.5"]


def test_a_deliberate_difference_needs_a_reason_and_is_checked_against_ours(tmp_path):
    ok = {"paper": 0.2, "ours": 0.5, "why": "digits are 8x8: a softer temperature"}
    recipe = dict(BASE, source={"paper": "a paper"}, paper={"method.temperature": ok})
    assert check_against_paper(pretrain.load_recipe(write(tmp_path, recipe))) == []
    recipe["paper"] = {"method.temperature": {"paper": 0.2, "ours": 0.5, "why": ""}}
    assert "with a reason" in check_against_paper(pretrain.load_recipe(write(tmp_path, recipe)))[0]
    recipe["paper"] = {"method.temperatur": 0.5}
    assert "no setting of that name" in check_against_paper(pretrain.load_recipe(write(tmp_path, recipe)))[0]


def test_source_and_paper_may_change_on_resume_and_hold_no_components(tmp_path):
    assert recipe_differences({"paper": {"a": 1}, "source": {"paper": "x"}}, {"paper": {"a": 2}}) == []
    recipe = dict(BASE, source={"paper": "a"}, paper={"method": {"_component_": "os.system"}})
    with pytest.raises(ConfigError, match="paper.method holds a component"):
        pretrain.load_recipe(write(tmp_path, recipe))


def build(cfg):
    """The recipe's method and its optimizer over the engine's parameter groups: on the meta device
    (no memory, no init cost) where every layer supports it, else on the CPU."""
    try:
        with torch.device("meta"):
            method = config.instantiate(cfg.method, where="method.")
    except (RuntimeError, NotImplementedError):  # e.g. an init that reads a value (.item()) or copies data
        method = config.instantiate(cfg.method, where="method.")
    return method, config.instantiate(cfg.optimizer, where="optimizer.", params=method.param_groups())


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_every_recipe_builds_its_method_and_the_optimizer_over_its_parameter_groups(path):
    """What the values above describe really builds: the method from its kwargs, and the optimizer over
    the parameter groups the engine gives it (every trainable parameter in exactly one group; EMA
    targets are frozen)."""
    cfg = load(path)
    tokenizer = cfg.method.get("tokenizer")
    if tokenizer and not Path(tokenizer).exists():
        pytest.skip(f"needs the tokenizer of the user's data set ({tokenizer}), read when the method is built")
    method, optimizer = build(cfg)
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert len(grouped) == len({id(p) for p in grouped}) and {id(p) for p in grouped} == trainable
