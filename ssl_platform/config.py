"""Recipes: flat OmegaConf YAML with `_component_` nodes, overrides, and validation.

The override syntax (`key=value`, `key={...}`, `~key`) is `ssl_platform.overrides`; `load` applies it.

A component node is `{_component_: dotted.path, **literal_kwargs}`. `instantiate` imports the
callable and calls it with the node's kwargs plus runtime kwargs given in Python (the optimizer's
`params`, the method's `backbone` module...). Composition happens in Python, never in YAML, so a
component's kwargs may not hold another component.

`validate` is the one place that reads a recipe's shape. It binds every component's kwargs to the
callable's signature and checks plain sections (`train`, `data`, ...) against dataclasses, so a typo
in a recipe or on the command line fails before any work starts, naming the key and listing the
valid ones. Values are checked too: against the callable's type annotations, and against a
section field's type and range (`option(default, ge=..., gt=..., le=...)`).

A recipe may come from someone else: `locate` resolves only what `ssl_platform.trust` allows
(docs/security.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import inspect
import math
import os
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, Union

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_platform import trust
from ssl_platform.overrides import MISSING_VALUE, OverrideError, apply_overrides

COMPONENT = "_component_"
# the largest magnitude a float setting may have: lr, weight decay, eps... live far below, and squares of
# values above ~1.8e19 overflow float32 (the same bound tables use for their columns)
MAX_FLOAT = 1e18

class ConfigError(ValueError):
    """A recipe or override is wrong; the message says which key and what to write instead."""


def load(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Read a YAML recipe and apply overrides in order: `key=value`, `key={...}` (replaces a mapping),
    `~key` (deletes), as `ssl_platform.overrides` defines them.

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
    try:
        apply_overrides(cfg, overrides)
    except OverrideError as err:
        raise ConfigError(str(err)) from None
    try:
        trust.check_env_reads(OmegaConf.to_container(cfg, resolve=False), str(path))
    except trust.UntrustedError as err:
        raise ConfigError(str(err)) from None
    return cfg


def to_plain(node: Any) -> Any:
    """DictConfig/ListConfig -> dict/list with interpolations resolved; other values unchanged."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def locate(path: str) -> Callable:
    """Import `package.module.Name` (attributes may nest: `module.Class.method`) if the trust rules of
    `ssl_platform.trust` allow it (checked before anything is imported, and on what it resolves to).

    Raises:
        ConfigError: the path is not allowed (see the module docstring), or does not exist.
    """
    path = str(path)
    user = trust.user_allowed()
    try:
        trust.check_path(path, user)
    except trust.UntrustedError as err:
        raise ConfigError(str(err)) from None
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
        try:
            trust.check_resolved(path, obj, user)
        except trust.UntrustedError as err:
            raise ConfigError(str(err)) from None
        return obj
    raise ConfigError(f"cannot import {COMPONENT} {path!r}: no such module or attribute")


@contextlib.contextmanager
def naming_keys(where: str) -> Iterator[None]:
    """Turn OmegaConf's errors (a broken `${...}`, a value of the wrong kind) into a ConfigError naming the key."""
    try:
        yield
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        message = str(getattr(err, "msg", None) or err).splitlines()[0]  # OmegaConf appends full_key/object_type
        raise ConfigError(f"{where}: key {key}: {message}; fix or remove it") from None


def resolve_all(cfg: DictConfig, where: str = "recipe") -> None:
    """Resolve every interpolation once, so a broken `${...}` fails now, naming its key, not mid-run."""
    with naming_keys(where):
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def is_component(node: Any) -> bool:
    return isinstance(node, (Mapping, DictConfig)) and COMPONENT in node


def instantiate(node: Any, *, where: str = "", **runtime_kwargs: Any) -> Any:
    """Build the object a `_component_` node describes; `None` stays `None`.

    Runtime kwargs win over recipe kwargs of the same name only if the recipe does not set them;
    setting both is an error, because one of the two would be silently ignored. `where` is the
    node's place in the recipe (`"optimizer."`), for the message when the callable refuses a value.
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
    fn = locate(node[COMPONENT])
    try:
        return fn(**kwargs, **runtime_kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        # the constructor's own check of a value (a range, a combination): name the component, keep the cause
        given = ", ".join(f"{where}{k}={v!r}" for k, v in sorted(kwargs.items()))
        raise ConfigError(f"{node[COMPONENT]}({given}) refused its arguments: {err}") from err


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


def option(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None) -> Any:
    """A section field with a range: `epochs: int = option(100, ge=1)` (None always passes)."""
    return dataclasses.field(default=default, metadata={"ge": ge, "gt": gt, "le": le})


def _type_hints(fn: Callable) -> dict[str, Any]:
    """Parameter annotations of a callable (a class: its __init__), resolved; {} when they cannot be."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - names only imported under TYPE_CHECKING etc.: leave unchecked
        return {}


def conforms(value: Any, tp: Any) -> bool:
    """Whether a recipe value (None, bool, int, float, str, list, dict) can be a `tp`.

    Unknown or unresolvable annotations pass: the check refuses only what certainly cannot work.
    """
    if tp is Any or tp is inspect.Parameter.empty or isinstance(tp, (str, typing.TypeVar, typing.ForwardRef)):
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return conforms(value, args[0])
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:  # NaN or inf is no setting of anything: it only poisons the run later
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type) and issubclass(tp, (PurePath, os.PathLike)):
        return isinstance(value, str)
    container = origin or tp
    if container in (list, tuple, set, frozenset, Sequence, typing.Sequence) or container is list:
        if not isinstance(value, (list, tuple, ListConfig)):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
        return not args or all(conforms(v, args[0]) for v in value)
    if container in (dict, Mapping, typing.Mapping) or container is dict:
        return isinstance(value, (Mapping, DictConfig))
    if isinstance(container, type):
        if container in (int, float, bool, str, list, dict, tuple):
            return False  # handled above for the plain forms
        return isinstance(value, container)  # e.g. torch.Tensor or Callable: a recipe value never is one
    return True


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_value(where: str, value: Any, tp: Any) -> None:
    """ConfigError naming `where` unless `value` conforms to the annotation `tp` (and, where `tp` takes
    a float, lies within +-MAX_FLOAT)."""
    if not conforms(value, tp):
        raise ConfigError(f"{where}={value!r} is not a valid value: expected {_describe(tp)}")
    if (isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_FLOAT
            and conforms(0.5, tp)):
        raise ConfigError(f"{where}={value!r} is out of range: no float setting is larger than {MAX_FLOAT:g} in "
                          "magnitude (it would overflow float32 arithmetic); check the exponent")


def check_range(where: str, value: Any, field: dataclasses.Field) -> None:
    """ConfigError naming `where` when a numeric value is outside the field's `option` range (or NaN)."""
    meta = field.metadata
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{where}=nan is not a number; give a finite value")
    for name, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                           ("le", lambda v, b: v <= b, "<=")):
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{where}={value!r} is out of range: it must be {word} {bound}")


def _unknown(where: str, key: str, valid: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown key {where}{key!r}{hint}; valid keys: {', '.join(sorted(valid)) or '(none)'}")


def validate_component(node: Any, where: str, runtime: Sequence[str] = ()) -> None:
    """Check one `_component_` node: importable, kwargs bindable, no nested components, no `???`."""
    if not is_component(node):
        raise ConfigError(f"{where.rstrip('.')} must be a mapping with {COMPONENT}: dotted.path")
    try:
        fn = locate(str(node[COMPONENT]))
    except ConfigError as err:
        raise ConfigError(f"{where}{err}") from None
    valid, takes_any = _valid_params(fn)
    hints = _type_hints(fn)
    for key in node:
        if key == COMPONENT:
            continue
        if OmegaConf.is_missing(node, key) if isinstance(node, DictConfig) else node[key] == MISSING_VALUE:
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
        if key in hints:
            check_value(f"{where}{key}", to_plain(value), hints[key])


def validate_section(node: Any, schema: type, where: str) -> None:
    """Check a plain section against a dataclass: known keys only, no `???` values."""
    if not isinstance(node, (Mapping, DictConfig)):
        raise ConfigError(f"{where.rstrip('.')} must be a mapping, got {node!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in node:
        if key not in fields:
            raise _unknown(where, key, list(fields))
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, key):
            raise ConfigError(f"{where}{key} has no value; set it on the command line: {where}{key}=...")
        if isinstance(node, DictConfig) and OmegaConf.is_interpolation(node, key):
            continue  # may point at a value filled in after validation (e.g. a default out_dir)
        if is_component(node[key]):
            continue  # checked as a component by `validate`
        try:
            value = to_plain(node[key])
        except OmegaConfBaseException:
            continue  # an interpolation inside, resolved (and reported) by `resolve_all`
        check_value(f"{where}{key}", value, hints[key])
        check_range(f"{where}{key}", value, fields[key])
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
            nested recipe, validated against these same `sections`), `dict` (plain values under
            any keys, never a component), or `str`/`int` etc. for a scalar. Keys absent from
            `sections` are errors.
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
        elif kind is dict:  # plain values by key, read by people and tests, never instantiated
            if not isinstance(node, DictConfig):
                raise ConfigError(f"{prefix}{key} must be a mapping, got {node!r}")
            for sub, value in node.items():
                if is_component(value):
                    raise ConfigError(f"{where}{sub} holds a component; {prefix}{key} holds plain values only")
        elif isinstance(node, (DictConfig, ListConfig)):
            raise ConfigError(f"{prefix}{key} must be a {kind.__name__}, got a {type(node).__name__}")
