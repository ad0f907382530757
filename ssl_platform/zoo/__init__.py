"""The model zoo's public API: `from ssl_platform.zoo import load_backbone`.

    backbone = load_backbone("simclr_resnet18.fmnist_200ep")          # verified against its sha256
    model = timm.create_model(**timm_kwargs("vit_tiny.digits_100ep"))  # plain timm, where it can
    publish("runs/simclr_resnet18_fmnist_200ep", "simclr_resnet18.fmnist_200ep")

Where the zoo is, how files are checked and cached: `ssl_platform.zoo.index`.
"""

from ssl_platform.zoo.backbones import resolve_backbone
from ssl_platform.zoo.card import write_docs
from ssl_platform.zoo.download import DownloadError, IntegrityError
from ssl_platform.zoo.index import (
    ENV_ZOO,
    ZooEntry,
    ZooError,
    cache_dir,
    export_timm,
    get_entry,
    list_models,
    load_backbone,
    pull,
    read_index,
    resolve_zoo,
    timm_kwargs,
    verify,
)
from ssl_platform.zoo.publishing import find_evaluations, publish

__all__ = [
    "ENV_ZOO",
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
