"""What a `backbone=` value of `sslp eval` names, built: a run directory, a backbone file, a zoo name,
a random init (of a suite's `random_backbone` or of a run's, a file's or a zoo entry's architecture),
or `raw`, a table's own columns.

    backbone=RUN_DIR | FILE.safetensors | ZOO_NAME | random | random:RUN_DIR | random:ZOO_NAME | raw

A run directory or file of that name wins over a zoo name (arch.tag); a zoo name is looked up in
`zoo` (default: `zoo.index.resolve_zoo`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_platform.checkpoint.io import backbone_file, load_backbone, read_backbone_metadata
from ssl_platform.config import ConfigError, to_plain
from ssl_platform.evaluation.tabular import RawTabular
from ssl_platform.models.backbones import from_spec
from ssl_platform.provenance import file_sha256
from ssl_platform.zoo import index as zoo_index
from ssl_platform.zoo import loading as zoo_loading
from ssl_platform.zoo.checks import NAME, ZooError


def _zoo_entry(spec: str, zoo: str | None) -> tuple[zoo_index.ZooEntry | None, str]:
    """(the zoo entry called `spec`, "") or (None, why not) when `spec` is no zoo name (arch.tag) or not in the zoo."""
    if not NAME.fullmatch(spec):
        return None, ""
    try:
        return zoo_index.get_entry(spec, zoo), ""
    except ZooError as err:
        return None, str(err)


def resolve_backbone(spec: str, suite_cfg: Any, seed: int = 0, zoo: str | None = None) -> tuple[nn.Module, str, str]:
    """A `backbone=` value -> (module, name, sha256 of its file or "" for a random init).

    See the module docstring for the accepted forms; a zoo name (arch.tag) is looked up in `zoo`
    (default: `zoo.index.resolve_zoo`) when no run directory or file has that name. `raw` is the
    raw-feature baseline of tables (`evaluation.tabular.RawTabular`), sized by the suite's
    `random_backbone` schema (num_numeric, cat_cardinalities).

    Args:
        spec: the `backbone=` value.
        suite_cfg: the loaded suite (its `random_backbone` builds `random` and `raw`).
        seed: seeds a random init.
        zoo: zoo directory or http(s) base URL.
    """
    if spec == "raw":
        arch = to_plain(suite_cfg.get("random_backbone")) or {}
        if "num_numeric" not in arch:
            raise ConfigError(
                "backbone=raw is the raw-feature baseline of a table: it needs the table's schema in the suite, "
                "random_backbone: {name: ..., num_numeric: N, cat_cardinalities: [...]} (Table(...).schema())"
            )
        return RawTabular(arch["num_numeric"], arch.get("cat_cardinalities") or ()), "raw", ""
    if spec == "random" or spec.startswith("random:"):
        torch.manual_seed(seed)
        if spec == "random":
            arch = to_plain(suite_cfg.get("random_backbone"))
            if not arch:
                raise ConfigError("backbone=random needs random_backbone: {name: ..., ...} in the suite")
            return from_spec(arch), "random", ""
        source = Path(spec.split(":", 1)[1])
        entry = None if source.exists() else _zoo_entry(str(source), zoo)[0]
        if entry is not None:  # the architecture is in the index: no download needed
            return from_spec(entry.backbone_spec), f"random-{entry.name}", ""
        file = source / "backbone.safetensors" if source.is_dir() else source
        name = f"random-{source.name if source.is_dir() else source.stem}"
        return from_spec(read_backbone_metadata(file)["backbone"]), name, ""
    path = Path(spec)
    if path.exists():
        file = backbone_file(path)
        return load_backbone(file), path.name if path.is_dir() else path.stem, file_sha256(file)
    entry, why_not = _zoo_entry(spec, zoo)
    if entry is not None:
        return zoo_loading.load_backbone(spec, zoo), spec, entry.sha256
    raise FileNotFoundError(
        f"backbone={spec!r} is neither a run directory nor a .safetensors file, nor a name in the model zoo"
        + (f" ({why_not})" if why_not else "") + "; use backbone=random, backbone=random:RUN_DIR, "
        "backbone=RUN_DIR, backbone=FILE.safetensors, backbone=ZOO_NAME (zoo=DIR_OR_URL chooses the zoo) or, "
        "for tables, backbone=raw"
    )
