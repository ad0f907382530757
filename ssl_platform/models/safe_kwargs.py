"""The timm kwargs that would make it read a file or the network, and the check that refuses them.

Torch-free, so that a zoo index can be checked without importing timm (`zoo.checks`);
`models.backbones` re-exports both.
"""

from __future__ import annotations

from typing import Any

# timm.create_model kwargs that make it read a file or the network (a checkpoint unpickled with
# weights_only=False in older timm, or a hub download). Backbone specs come from recipes, run
# directories, safetensors metadata and zoo indexes written by other people, so none may carry them:
# weights only ever enter through our own safetensors loads.
FILE_LOADING_KWARGS = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                                 "cache_dir", "pretrained_strict"})


def check_timm_kwargs(kwargs: dict[str, Any], where: str) -> None:
    """Refuse backbone kwargs that would make timm load weights from a file or the network.

    Raises:
        ValueError: names the keys and `where` they came from.
    """
    bad = sorted(FILE_LOADING_KWARGS & set(kwargs))
    if bad:
        raise ValueError(
            f"{where}: backbone kwargs {bad} would make timm load weights from a file or the network, which "
            "may run code; they are refused. Load pretrained weights from a run directory or the zoo "
            "(backbone=RUN_DIR | ZOO_NAME) instead"
        )
