"""Command-line overrides of a recipe or suite, applied in order after the file is read.

    train.epochs=10                          set a value (read as YAML: 10 an int, 1e-3 a float,
                                             [a, b] a list, null None, ${train.seed} an interpolation)
    method.backbone_kwargs.drop_rate=0.1     set one entry of a mapping; its other entries stay
    method.backbone_kwargs={drop_rate: 0.1}  replace the whole mapping: its other entries are gone
    ~method.backbone_kwargs.stem_stride      delete a key, which must exist

Every `key=value` assigns: a mapping or list given as the value replaces what the key held, it is
never merged into it (to change one entry, name the entry). Missing keys along the path are created
(validation then refuses any key that nothing accepts). Overrides apply in order: `~a.b a.b=1`
deletes, then sets. `key=???` is refused: it would leave the key without a value.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

MISSING_VALUE = "???"
DELETE = "~"


class OverrideError(ValueError):
    """An override is malformed or names what is not there; `config.load` reports it as a ConfigError."""


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Apply `key=value` and `~key` overrides to `cfg` in place, one at a time (see the module docstring).

    Raises:
        OverrideError: naming the override that is malformed or cannot apply, and what to write instead.
    """
    for item in overrides:
        if item.startswith(DELETE):
            delete(cfg, item)
        else:
            assign(cfg, item)


def _check_key(key: str, item: str) -> None:
    if key.startswith("+"):  # Hydra's "add a key": here every override may add one
        raise OverrideError(f"override {item!r}: write the key without '+' ({key.lstrip('+')}=...); "
                            "an override may add a key as it is")
    if any(not part.strip() for part in key.split(".")):
        raise OverrideError(f"override {item!r}: the key {key!r} has an empty part; write dotted names like "
                            "train.epochs")


def assign(cfg: DictConfig, item: str) -> None:
    """`key=value`: set `key` (creating the path) to the YAML `value`; a mapping or list replaces the old one."""
    if "=" not in item or item.startswith("="):
        raise OverrideError(f"override {item!r} is not of the form key=value (e.g. train.epochs=10) or ~key")
    key, raw = item.split("=", 1)
    _check_key(key, item)
    if raw.strip() == MISSING_VALUE:
        # OmegaConf would take it as "no value" and validation could not name the key that lost its value
        raise OverrideError(f"override {key}={MISSING_VALUE} gives no value; write {key}=<a value>")
    try:  # OmegaConf's own YAML reading (so `${...}` stays an interpolation), under a fixed key
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={raw}"]), resolve=False)["value"]
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, TypeError, KeyError, IndexError) as err:
        message = str(getattr(err, "msg", None) or err).splitlines()[0]
        raise OverrideError(f"cannot apply override {item!r} (key {key}): {message}") from None


def delete(cfg: DictConfig, item: str) -> None:
    """`~key`: remove `key` (a mapping's entry or a list's index) from `cfg`."""
    key = item[len(DELETE):]
    if "=" in key:
        raise OverrideError(f"override {item!r}: {DELETE}key deletes a key and takes no value; write "
                            f"{DELETE}{key.split('=', 1)[0]}")
    if not key:
        raise OverrideError(f"override {item!r} names no key; write e.g. {DELETE}method.backbone_kwargs.stem_stride")
    _check_key(key, item)
    why = f"cannot delete {key} (override {item!r})"
    *path, last = key.split(".")
    node = cfg
    for depth, part in enumerate(path):
        node = _child(node, path[:depth], part, why)
    where = ".".join(path) or "the top level"
    if isinstance(node, ListConfig):
        del node[_index(node, where, last, why)]
        return
    if last not in node:
        close = difflib.get_close_matches(last, [str(k) for k in node], n=1)
        hint = f" (did you mean {DELETE}{'.'.join([*path, close[0]])}?)" if close else ""
        raise OverrideError(f"{why}: {where} has no key {last!r}{hint}; its keys: "
                            f"{', '.join(sorted(map(str, node))) or '(none)'}")
    del node[last]


def _index(node: ListConfig, where: str, part: str, why: str) -> int:
    if not (part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node)):
        raise OverrideError(f"{why}: {where} is a list of {len(node)} items; give an index from 0 to "
                            f"{len(node) - 1}, not {part!r}")
    return int(part)


def _child(node: DictConfig | ListConfig, above: list[str], part: str, why: str) -> DictConfig | ListConfig:
    """The mapping or list at `node[part]` on the way to a key to delete (`above`: the path to `node`)."""
    where, here = ".".join(above) or "the top level", ".".join([*above, part])
    if isinstance(node, ListConfig):
        part = _index(node, where, part, why)
    elif part not in node:
        raise OverrideError(f"{why}: {where} has no key {part!r}")
    if OmegaConf.is_missing(node, part):
        raise OverrideError(f"{why}: {here} has no value ({MISSING_VALUE}), so nothing under it to delete")
    if OmegaConf.is_interpolation(node, part):
        raise OverrideError(f"{why}: {here} is an interpolation ({OmegaConf.to_container(node, resolve=False)[part]}),"
                            f" not a mapping of its own; set or delete {here} itself")
    child = node[part]
    if not isinstance(child, (DictConfig, ListConfig)):
        raise OverrideError(f"{why}: {here} is a value ({child!r}), not a mapping or list")
    return child
