"""Recipe loading, overrides, instantiation and validation; every shipped YAML validates."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ssl_platform import config, pretrain
from ssl_platform.config import ConfigError
from ssl_platform.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "recipes" / "simclr" / "debug.yaml"


def test_overrides_apply_and_add_keys(tmp_path):
    cfg = pretrain.load_recipe(DEBUG, ["train.epochs=7", "method.temperature=0.25", "data.batch_size=32"])
    assert cfg.train.epochs == 7
    assert cfg.method.temperature == 0.25
    assert cfg.data.batch_size == 32
    assert cfg.train.out_dir == "runs/simclr_debug"  # default filled in from the name


def test_unknown_train_key_names_key_and_lists_valid():
    with pytest.raises(ConfigError) as err:
        pretrain.load_recipe(DEBUG, ["train.epoch=3"])
    msg = str(err.value)
    assert "train.'epoch'" in msg or "'epoch'" in msg
    assert "did you mean 'epochs'" in msg
    assert "max_steps" in msg and "warmup_epochs" in msg  # lists valid keys


def test_unknown_component_kwarg_names_key_and_signature():
    with pytest.raises(ConfigError) as err:
        pretrain.load_recipe(DEBUG, ["method.temprature=0.1"])
    msg = str(err.value)
    assert "temprature" in msg and "did you mean 'temperature'" in msg
    assert "proj_dim" in msg and "backbone" in msg


def test_unknown_top_level_section():
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        pretrain.load_recipe(DEBUG, ["trian.epochs=1"])


def test_missing_value_says_how_to_set_it(tmp_path):
    recipe = OmegaConf.load(DEBUG)
    recipe.data.dataset = {"_component_": "ssl_platform.data.datasets.ImageFolder", "root": "???"}
    path = tmp_path / "r.yaml"
    OmegaConf.save(recipe, path)
    with pytest.raises(ConfigError, match=r"data\.dataset\.root has no value.*data\.dataset\.root=\.\.\."):
        pretrain.load_recipe(path)


def test_nested_component_is_refused(tmp_path):
    recipe = OmegaConf.load(DEBUG)
    recipe.method.backbone = {"_component_": "timm.create_model", "model_name": "resnet18"}
    path = tmp_path / "r.yaml"
    OmegaConf.save(recipe, path)
    with pytest.raises(ConfigError, match="recipes are flat"):
        pretrain.load_recipe(path)


def test_runtime_kwarg_in_recipe_is_refused():
    with pytest.raises(ConfigError, match="optimizer.params is supplied by the program"):
        pretrain.load_recipe(DEBUG, ["optimizer.params=1"])


def test_bad_import_path():
    with pytest.raises(ConfigError, match="cannot import"):
        pretrain.load_recipe(DEBUG, ["method._component_=ssl_platform.methods.nope.Nope"])


def test_yaml_syntax_error_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {dataset: {root: ???}}\n")  # `?` opens a complex key in a flow mapping
    with pytest.raises(ConfigError, match="cannot parse"):
        config.load(bad)


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        config.load(DEBUG, ["train.epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")


def test_instantiate_merges_runtime_kwargs_and_rejects_clashes():
    node = OmegaConf.create({"_component_": "torch.optim.SGD", "lr": 0.5, "momentum": 0.9})
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = config.instantiate(node, params=params)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(ConfigError, match="supplied by the program"):
        config.instantiate(node, lr=1.0, params=params)
    assert config.instantiate(None) is None


def test_locate_surfaces_missing_dependency_inside_module(tmp_path, monkeypatch):
    pkg = tmp_path / "brokenpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("import not_an_installed_module\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SSLP_ALLOW_COMPONENTS", "brokenpkg")  # a package of the user's, allowed by the user
    with pytest.raises(ModuleNotFoundError, match="not_an_installed_module"):
        config.locate("brokenpkg.mod.X")


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_validates(path):
    # values a user must give (`???`, e.g. a data root) get a placeholder; everything else as shipped
    required = pretrain.required_keys(path)
    cfg = pretrain.load_recipe(path, [f"{key}=/placeholder" for key in required])
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "ssl_platform pretrain" in first and path.name in first, (
        "every recipe begins with the command that launches it"
    )
    assert path.parent.name in METHODS  # recipes/<METHODS key>/
    assert cfg.name


@pytest.mark.parametrize("path", sorted((ROOT / "eval").glob("*.yaml")), ids=lambda p: p.name)
def test_every_eval_suite_validates(path):
    from ssl_platform.evaluation.suite import load_suite

    load_suite(path, [])
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "ssl_platform eval" in first
