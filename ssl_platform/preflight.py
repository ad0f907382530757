"""Checks of a recipe before any work: what `sslp pretrain` and its `--dry-run` verify after
`pretrain.load_recipe` has validated the keys and values, so that a run never fails deep in
`conv2d` or at a missing file after minutes of set-up.

`check_recipe(cfg)` lists every problem it finds (each naming the recipe key, the values and
what to do) in one `ConfigError`, for the recipe and its `before:` stage:

- data on disk: every data path (`data.root.DATA_PATH_KEYS`: dataset roots, manifests, tokenizer
  files...) of the method, `data` and, when it runs, `monitor`, resolved by the rule of
  `data/root.py` (relative: under `$SSL_PLATFORM_DATA`, then the working directory); a data root
  that a dataset reads and `$SSL_PLATFORM_DATA` names must exist;
- images against the backbone, for transforms with a `size` or `channels` (read from the recipe,
  else the constructors' defaults): the transform's channels against `method.in_chans`, its size
  against `method.image_size`, the image side against a ViT's patch (and the size a ViT without a
  method `image_size` is built for), and, for other backbones, a forward on the meta device at that
  side (a size too small for the strides). The backbone is built on the meta device from the
  method's `backbone`, `in_chans`, `small_input` and `backbone_kwargs`: no weights, no data.

Method-specific constraints (SparK's total stride, SatMAE++'s scales) stay in the methods'
constructors, which `pretrain.run` calls first.
"""

from __future__ import annotations

import inspect
from typing import Any

from omegaconf import DictConfig

from ssl_platform import config
from ssl_platform.data.prepare import NAMES as PREPARED
from ssl_platform.data.root import data_problems
from ssl_platform.models.backbones import create_backbone
from ssl_platform.models.input_fit import InputFacts, fit_problems, input_facts, on_meta, stride_problem


def check_recipe(cfg: DictConfig) -> None:
    """Every check above on a recipe validated by `pretrain.load_recipe`.

    Raises:
        ConfigError (a ValueError): the problems found, one per line.
    """
    problems = recipe_problems(cfg)
    if problems:
        raise config.ConfigError(f"recipe {cfg.get('name')} cannot run ({len(problems)} problem"
                                 f"{'s' if len(problems) > 1 else ''} found before any work):\n"
                                 + "\n".join(f"  - {p}" for p in problems))


def recipe_problems(cfg: DictConfig | dict, prefix: str = "") -> list[str]:
    """The problems `check_recipe` raises, as a list (empty: the recipe may run)."""
    recipe = config.to_plain(cfg)
    problems = recipe_problems(recipe["before"], f"{prefix}before.") if recipe.get("before") else []
    method, data, monitor = recipe.get("method") or {}, recipe.get("data") or {}, recipe.get("monitor") or {}
    nodes = {f"{prefix}method": method, **{f"{prefix}data.{k}": data.get(k) for k in ("dataset", "transform", "collate")}}
    monitored = bool(monitor.get("knn_every_epochs"))
    if monitored:
        nodes.update({f"{prefix}monitor.{k}": monitor.get(k) for k in ("dataset", "val_dataset", "transform")})
    # a tokenizer the method trains on `tokenizer_corpus` (M3AE) exists once the method is built,
    # before the data is: pretrain.run builds the method first
    tokenizer = method.get("tokenizer")
    trained = [tokenizer] if isinstance(tokenizer, str) and method.get("tokenizer_corpus") else []
    problems += data_problems(nodes, prepared=PREPARED, will_exist=trained)
    problems += image_problems(method, data.get("transform"), f"{prefix}method", f"{prefix}data.transform")
    if monitored:
        problems += image_problems(method, monitor.get("transform"), f"{prefix}method", f"{prefix}monitor.transform")
    return problems


def arguments(node: dict[str, Any]) -> dict[str, Any]:
    """A component's kwargs: the node's own over its callable's defaults (for a class whose
    `__init__` passes `**kwargs` on, its bases' defaults too, e.g. GSimCLR's from SimCLR)."""
    given = {k: v for k, v in node.items() if k != config.COMPONENT}
    try:
        fn = config.locate(str(node[config.COMPONENT]))
    except config.ConfigError:  # pretrain.load_recipe has refused such a recipe already
        return given
    inits = [c.__init__ for c in fn.__mro__ if "__init__" in vars(c)] if inspect.isclass(fn) else [fn]
    defaults: dict[str, Any] = {}
    for init in inits:
        try:
            params = list(inspect.signature(init).parameters.values())
        except (TypeError, ValueError):  # a builtin without a signature
            break
        for p in params:
            if p.default is not p.empty:
                defaults.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return {**defaults, **given}


def _side(value: Any) -> tuple[int, int] | None:
    """An image size as (H, W): an int side or a pair; None when not given."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (value[0], value[1])
    return None


def _probe_backbone(m: dict[str, Any], in_chans: int, where: str) -> tuple[InputFacts | None, Any, list[str]]:
    """(facts, meta backbone or None, problems) of the backbone the method's kwargs describe."""
    name, kwargs = m.get("backbone"), dict(m.get("backbone_kwargs") or {})
    if not isinstance(name, str):
        return None, None, []
    try:
        model = on_meta(lambda: create_backbone(name, small_input=bool(m.get("small_input")), in_chans=in_chans,
                                                **kwargs))
    except ValueError as err:  # an unknown timm name, refused kwargs: the method would fail the same way
        return None, None, [f"{where}.backbone={name}: {err}"]
    except TypeError:  # kwargs the method itself consumes: leave the checks to its constructor
        return None, None, []
    # read from the module; for one that cannot be built on the meta device, what the kwargs say
    facts = input_facts(model) if model is not None else InputFacts(in_chans, _side(kwargs.get("patch_size")))
    if "image_size" in m:  # the method builds its ViT for image_size itself
        facts.fixed_size = None
    return facts, model, []


def image_problems(method: Any, transform: Any, mw: str, tw: str) -> list[str]:
    """The transform's images against the method's backbone (see the module docstring); `mw` and `tw`
    are the keys of the method and the transform, e.g. `method` and `data.transform`."""
    if not config.is_component(method) or not config.is_component(transform):
        return []
    t, m = arguments(transform), arguments(method)
    if "size" not in t and "channels" not in t:  # not an image transform (graphs, tables, tensors as they are)
        return []
    channels = t.get("channels") if isinstance(t.get("channels"), int) else None
    size, image_size = _side(t.get("size")), _side(m.get("image_size"))
    in_chans = m.get("in_chans") if isinstance(m.get("in_chans"), int) else None
    problems = []
    if size and image_size and size != image_size:
        problems.append(f"{tw}.size={t['size']} but {mw}.image_size={m['image_size']}: the method is built for "
                        f"{image_size[0]}x{image_size[1]} images and would get {size[0]}x{size[1]} ones; set both "
                        "to the same size")
    if in_chans is None:
        return problems
    facts, meta_model, built = _probe_backbone(m, in_chans, mw)
    problems += built
    if facts is None:
        if channels is not None and channels != in_chans:  # no backbone to read: the method's own kwarg
            facts = InputFacts(in_chans)
        else:
            return problems
    model = f"{mw}.backbone={m.get('backbone')} (in_chans={in_chans})"
    side = image_size or size
    side_key = f"{mw}.image_size" if image_size else f"{tw}.size"
    fixes = {
        "channels": f"set {tw}.channels and {mw}.in_chans to the same number (1: grayscale, 3: RGB)",
        "patch": f"set {side_key}{' and ' + tw + '.size' if image_size and size else ''} to such a side, or "
                 f"change the patch ({mw}.backbone_kwargs.patch_size)",
        "fixed_size": f"set {mw}.backbone_kwargs.img_size={side[0] if side else '?'} or {tw}.size to the backbone's",
        "strides": f"use larger images ({side_key}), or a backbone that downsamples less (a ResNet: "
                   f"{mw}.small_input=true)",
    }
    found = fit_problems(facts, channels, None, f"{tw} (channels={channels})", model)
    images = f"{side_key}={side[0] if side and side[0] == side[1] else list(side or ())}"
    if side is not None:
        found += fit_problems(facts, None, side, images, model)
    problems += [f"{text}; {fixes[kind]}" for kind, text in found]
    if side is not None and meta_model is not None and facts.patch is None:
        too_small = stride_problem(meta_model, in_chans, side, images, model)
        if too_small:
            problems.append(f"{too_small}; {fixes['strides']}")
    return problems
