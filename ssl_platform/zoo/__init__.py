"""The model zoo's public API: `from ssl_platform.zoo import load_backbone`.

    backbone = load_backbone("simclr_resnet18.fmnist32_2ep")               # verified against its sha256
    model = timm.create_model(**timm_kwargs("ijepa_vit_tiny.fmnist_4ep"))  # plain timm, where it can
    publish("runs/simclr_resnet18_fmnist32_2ep", "simclr_resnet18.fmnist32_2ep")  # a -dirty git sha: force=True

Where the zoo is, how files are checked and cached: `ssl_platform.zoo.index`.

The names below are imported when first used (PEP 562 `__getattr__`), not with the package: importing
any `ssl_platform.zoo.*` module runs this file first, and publishing and backbone resolution import
torch, timm, the methods and sklearn, which `sslp zoo list` must not wait for (`zoo.listing`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers, the API docs and tests/test_layers.py's import graph
    from ssl_platform.zoo.backbones import resolve_backbone
    from ssl_platform.zoo.card import write_docs
    from ssl_platform.zoo.checks import ZooError
    from ssl_platform.zoo.download import DownloadError, IntegrityError
    from ssl_platform.zoo.index import (
        ENV_ZOO,
        ZooEntry,
        cache_dir,
        export_timm,
        get_entry,
        list_models,
        pull,
        read_index,
        resolve_zoo,
        timm_kwargs,
        verify,
    )
    from ssl_platform.zoo.loading import load_backbone
    from ssl_platform.zoo.publishing import DirtyTreeError, find_evaluations, publish

# public name -> the submodule that defines it. `importlib.import_module` rather than an import statement
# inside `__getattr__`: tests/test_layers.py refuses `ssl_platform` imports inside functions (outside the
# CLI), and the TYPE_CHECKING block above keeps these edges in the import graph it checks
_SUBMODULE = {
    "ENV_ZOO": "index",
    "DirtyTreeError": "publishing",
    "DownloadError": "download",
    "IntegrityError": "download",
    "ZooEntry": "index",
    "ZooError": "checks",
    "cache_dir": "index",
    "export_timm": "index",
    "find_evaluations": "publishing",
    "get_entry": "index",
    "list_models": "index",
    "load_backbone": "loading",
    "publish": "publishing",
    "pull": "index",
    "read_index": "index",
    "resolve_backbone": "backbones",
    "resolve_zoo": "index",
    "timm_kwargs": "index",
    "verify": "index",
    "write_docs": "card",
}

__all__ = [  # the keys of _SUBMODULE (tests/zoo/test_zoo_list_fast.py checks)
    "ENV_ZOO",
    "DirtyTreeError",
    "DownloadError",
    "IntegrityError",
    "ZooEntry",
    "ZooError",
    "cache_dir",
    "export_timm",
    "find_evaluations",
    "get_entry",
    "list_models",
    "load_backbone",
    "publish",
    "pull",
    "read_index",
    "resolve_backbone",
    "resolve_zoo",
    "timm_kwargs",
    "verify",
    "write_docs",
]


def __getattr__(name: str) -> Any:
    """`ssl_platform.zoo.NAME`: imports NAME's submodule on first use and keeps the value here."""
    if name not in _SUBMODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SUBMODULE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
