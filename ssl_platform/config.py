"""Recipes: flat OmegaConf YAML with `_component_` nodes, `key=value` overrides, and validation.

A component node is `{_component_: dotted.path, **literal_kwargs}`. `instantiate` imports the
callable and calls it with the node's kwargs plus runtime kwargs given in Python (the optimizer's
`params`, the method's `backbone` module...). Composition happens in Python, never in YAML, so a
component's kwargs may not hold another component.

`validate` is the one place that reads a recipe's shape. It binds every component's kwargs to the
callable's signature and checks plain sections (`train`, `data`, ...) against dataclasses, so a typo
in a recipe or on the command line fails before any work starts, naming the key and listing the
valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

COMPONENT = "_component_"


class ConfigError(ValueError):
    """A recipe or override is wrong; the message says which key and what to write instead."""


def load(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Read a YAML recipe and apply `key=value` overrides (OmegaConf dotlist syntax).

    Overrides may add keys; `validate` then rejects any key that nothing accepts.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist; recipes live under recipes/<method>/ and eval/")
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError, OSError, ValueError) as err:
        raise ConfigError(f"cannot parse {path}: {err}") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path} must hold a mapping at the top level, not a {type(cfg).__name__}")
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=10)")
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot apply overrides {list(overrides)}: {err}") from err


def to_plain(node: Any) -> Any:
    """DictConfig/ListConfig -> dict/list with interpolations resolved; other values unchanged."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def locate(path: str) -> Callable:
    """Import `package.module.Name` (attributes may nest: `module.Class.method`)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            # only swallow "this prefix is not a module"; a missing dependency inside it must surface
            if err.name is None or not ".".join(parts[:cut]).startswith(err.name):
                raise
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ConfigError(f"cannot import {COMPONENT} {path!r}: no such module or attribute")


def is_component(node: Any) -> bool:
    return isinstance(node, (Mapping, DictConfig)) and COMPONENT in node


def instantiate(node: Any, **runtime_kwargs: Any) -> Any:
    """Build the object a `_component_` node describes; `None` stays `None`.

    Runtime kwargs win over recipe kwargs of the same name only if the recipe does not set them;
    setting both is an error, because one of the two would be silently ignored.
    """
    if node is None:
        return None
    node = to_plain(node)
    if not is_component(node):
        raise ConfigError(f"expected a mapping with {COMPONENT}, got {node!r}")
    kwargs = {k: v for k, v in node.items() if k != COMPONENT}
    clash = sorted(set(kwargs) & set(runtime_kwargs))
    if clash:
        raise ConfigError(f"{node[COMPONENT]}: {clash} are supplied by the program; remove them from the recipe")
    return locate(node[COMPONENT])(**kwargs, **runtime_kwargs)


def _valid_params(fn: Callable) -> tuple[list[str], bool]:
    """Names `fn` accepts as keywords, and whether it also takes **kwargs."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], True  # builtins without a signature: cannot check, accept
    names = [
        p.name for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return names, takes_any


def _unknown(where: str, key: str, valid: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown key {where}{key!r}{hint}; valid keys: {', '.join(sorted(valid)) or '(none)'}")


def validate_component(node: Any, where: str, runtime: Sequence[str] = ()) -> None:
    """Check one `_component_` node: importable, kwargs bindable, no nested components, no `???`."""
    if not is_component(node):
        raise ConfigError(f"{where.rstrip('.')} must be a mapping with {COMPONENT}: dotted.path")
    fn = locate(str(node[COMPONENT]))
    valid, takes_any = _valid_params(fn)
    for key in node:
        if key == COMPONENT:
            continue
        if OmegaConf.is_missing(node, key) if isinstance(node, DictConfig) else node[key] == "???":
            raise ConfigError(f"{where}{key} has no value; set it on the command line: {where}{key}=...")
        if key in runtime:
            raise ConfigError(f"{where}{key} is supplied by the program; remove it from the recipe")
        if not takes_any and key not in valid:
            raise _unknown(where, key, [v for v in valid if v not in runtime])
        # an interpolation may point at a value filled in after validation (e.g. a default out_dir)
        if isinstance(node, DictConfig) and OmegaConf.is_interpolation(node, key):
            continue
        value = node[key]
        if is_component(value):
            raise ConfigError(
                f"{where}{key} holds a component; recipes are flat: give plain values and compose in Python"
            )


def validate_section(node: Any, schema: type, where: str) -> None:
    """Check a plain section against a dataclass: known keys only, no `???` values."""
    if not isinstance(node, (Mapping, DictConfig)):
        raise ConfigError(f"{where.rstrip('.')} must be a mapping, got {node!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node:
        if key not in fields:
            raise _unknown(where, key, list(fields))
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, key):
            raise ConfigError(f"{where}{key} has no value; set it on the command line: {where}{key}=...")
    for name, f in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and name not in node:
            raise ConfigError(f"{where}{name} is required")


def section(node: Any, schema: type) -> Any:
    """A validated plain section as its dataclass (missing keys take the dataclass defaults)."""
    return schema(**(to_plain(node) or {}))


def validate(cfg: DictConfig, sections: Mapping[str, Any], runtime: Mapping[str, Sequence[str]] = (),
             prefix: str = "") -> None:
    """Validate a whole recipe.

    Args:
        cfg: the loaded recipe.
        sections: top-level key -> what it holds: a dataclass (a plain section whose keys may
            themselves be components, checked as such), the string "component", "recipe" (a whole
            nested recipe, validated against these same `sections`), or `str`/`int` etc. for a
            scalar. Keys absent from `sections` are errors.
        runtime: top-level (or `section.key`) path -> kwargs the program supplies to that component.
        prefix: where `cfg` sits in an enclosing recipe (e.g. "before."), for the messages.
    """
    runtime = dict(runtime)
    for key in cfg:
        if key not in sections:
            raise _unknown(prefix, key, list(sections))
    for key, kind in sections.items():
        if key not in cfg or cfg[key] is None:
            continue
        node = cfg[key]
        where = f"{prefix}{key}."
        if kind == "component":
            validate_component(node, where, runtime.get(key, ()))
        elif kind == "recipe":
            if not isinstance(node, DictConfig):
                raise ConfigError(f"{prefix}{key} must be a whole recipe (a mapping), got {node!r}")
            validate(node, sections, runtime, prefix=where)
        elif dataclasses.is_dataclass(kind):
            validate_section(node, kind, where)
            for sub, value in node.items():
                if is_component(value):
                    validate_component(value, f"{where}{sub}.", runtime.get(f"{key}.{sub}", ()))
        elif isinstance(node, (DictConfig, ListConfig)):
            raise ConfigError(f"{prefix}{key} must be a {kind.__name__}, got a {type(node).__name__}")
