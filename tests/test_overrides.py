"""Command-line overrides: `key=value` assigns (a mapping replaces, never merges), `~key` deletes, in order."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from ssl_platform import config
from ssl_platform.config import ConfigError
from ssl_platform.overrides import OverrideError, apply_overrides

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"name": "r", "seed": 3,
          "method": {"_component_": "m.M", "temperature": 0.5, "kwargs": {"stem_stride": 2, "drop": 0.1}},
          "data": {"mean": [0.1, 0.2, 0.3]}}


def applied(*overrides: str) -> dict:
    cfg = OmegaConf.create(copy.deepcopy(RECIPE))
    apply_overrides(cfg, overrides)
    return OmegaConf.to_container(cfg, resolve=False)


def expected(**changes) -> dict:
    """RECIPE with `section={...}` replacing whole top-level sections (the naive reference)."""
    return {**copy.deepcopy(RECIPE), **changes}


def test_setting_one_entry_keeps_its_siblings():
    method = copy.deepcopy(RECIPE["method"])
    method["kwargs"]["drop"] = 0.3
    assert applied("method.kwargs.drop=0.3") == expected(method=method)


def test_a_mapping_value_replaces_the_whole_mapping():
    method = {**RECIPE["method"], "kwargs": {"drop": 0.3}}  # stem_stride is gone: no merge
    assert applied("method.kwargs={drop: 0.3}") == expected(method=method)
    assert applied("method={_component_: x.Y}") == expected(method={"_component_": "x.Y"})
    assert applied("method.kwargs={}") == expected(method={**RECIPE["method"], "kwargs": {}})


def test_values_are_read_as_yaml_and_interpolations_stay_unresolved():
    out = applied("data.mean=[1, 2]", "seed=1e-3", "name=null", "method.temperature=${seed}", "new.key=abc")
    assert out["data"]["mean"] == [1, 2] and out["seed"] == 1e-3 and out["name"] is None
    assert out["method"]["temperature"] == "${seed}" and out["new"] == {"key": "abc"}
    assert applied("data.mean.1=9")["data"]["mean"] == [0.1, 9, 0.3]


def test_delete_removes_a_key_or_a_list_item():
    method = copy.deepcopy(RECIPE["method"])
    del method["kwargs"]["stem_stride"]
    assert applied("~method.kwargs.stem_stride") == expected(method=method)
    assert applied("~data.mean.0")["data"]["mean"] == [0.2, 0.3]
    assert applied("~data.mean.-1")["data"]["mean"] == [0.1, 0.2]
    assert "seed" not in applied("~seed")


def test_overrides_apply_in_order():
    assert applied("~method.temperature", "method.temperature=0.2")["method"]["temperature"] == 0.2
    assert "temperature" not in applied("method.temperature=0.2", "~method.temperature")["method"]


@pytest.mark.parametrize(("override", "message"), [
    ("~method.kwargs.stem_strid", ("cannot delete method.kwargs.stem_strid (override '~method.kwargs.stem_strid'): "
     "method.kwargs has no key 'stem_strid' (did you mean ~method.kwargs.stem_stride?); its keys: drop, stem_stride")),
    ("~nope.x", "cannot delete nope.x (override '~nope.x'): the top level has no key 'nope'"),
    ("~method.temperature.x", ("cannot delete method.temperature.x (override '~method.temperature.x'): "
     "method.temperature is a value (0.5), not a mapping or list")),
    ("~data.mean.3", ("cannot delete data.mean.3 (override '~data.mean.3'): data.mean is a list of 3 items; give an "
     "index from 0 to 2, not '3'")),
    ("~seed=3", "override '~seed=3': ~key deletes a key and takes no value; write ~seed"),
    ("~", "override '~' names no key; write e.g. ~method.backbone_kwargs.stem_stride"),
    ("+seed=1", "override '+seed=1': write the key without '+' (seed=...); an override may add a key as it is"),
    ("method..temperature=1", "override 'method..temperature=1': the key 'method..temperature' has an empty part"),
    ("seed", "override 'seed' is not of the form key=value (e.g. train.epochs=10) or ~key"),
    ("=3", "override '=3' is not of the form key=value"),
    ("seed=???", "override seed=??? gives no value; write seed=<a value>"),
    ("seed=[", "cannot apply override 'seed=[' (key seed): "),
])
def test_bad_override_is_refused_naming_it(override, message):
    cfg = OmegaConf.create(copy.deepcopy(RECIPE))
    with pytest.raises(OverrideError) as err:
        apply_overrides(cfg, [override])
    assert str(err.value).startswith(message)
    assert OmegaConf.to_container(cfg, resolve=False) == RECIPE  # nothing applied


def test_deleting_through_an_interpolation_names_it():
    cfg = OmegaConf.create({"a": {"b": 1}, "c": "${a}"})
    with pytest.raises(OverrideError, match=r"c is an interpolation \(\$\{a\}\), not a mapping of its own"):
        apply_overrides(cfg, ["~c.b"])


def test_load_reports_override_errors_as_config_errors():
    recipe = ROOT / "recipes" / "simclr" / "debug.yaml"
    with pytest.raises(ConfigError, match=r"method has no key 'temprature' \(did you mean ~method.temperature\?\)"):
        config.load(recipe, ["~method.temprature"])
    cfg = config.load(recipe, ["~method.backbone_kwargs", "method.small_input=false"])
    assert "backbone_kwargs" not in cfg.method and cfg.method.small_input is False


KEYS = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
SCALARS = st.one_of(st.integers(-5, 5), st.booleans(), st.text(alphabet="abc", min_size=1, max_size=3))
TREES = st.recursive(SCALARS, lambda inner: st.dictionaries(KEYS, inner, min_size=1, max_size=3), max_leaves=8)


def _paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _paths(value, (*prefix, key))


@given(tree=st.dictionaries(KEYS, TREES, min_size=1, max_size=3), data=st.data())
def test_assigning_a_mapping_equals_plain_dict_assignment_and_delete_equals_del(tree, data):
    path = data.draw(st.sampled_from([p for p in _paths(tree) if p]))
    value = data.draw(st.dictionaries(KEYS, SCALARS, max_size=3))
    reference = copy.deepcopy(tree)
    node = reference
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    cfg = OmegaConf.create(copy.deepcopy(tree))
    flow = "{" + ", ".join(f"{k}: {OmegaConf.to_yaml({'v': v}).strip()[3:]}" for k, v in value.items()) + "}"
    apply_overrides(cfg, [f"{'.'.join(path)}={flow}"])
    assert OmegaConf.to_container(cfg) == reference

    del node[path[-1]]
    apply_overrides(cfg, [f"~{'.'.join(path)}"])
    assert OmegaConf.to_container(cfg) == reference
