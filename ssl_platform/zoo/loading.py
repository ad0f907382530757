"""A zoo backbone by name, built and loaded: the one part of the zoo's API that needs torch.

`zoo.index` finds, pulls and verifies the weights file without importing torch (so `sslp zoo list`
answers fast); this module rebuilds the model from the verified file (`checkpoint.io.load_backbone`).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ssl_platform.checkpoint import io
from ssl_platform.zoo.index import get_entry, pull_entry, resolve_zoo


def load_backbone(name: str, zoo: str | Path | None = None) -> nn.Module:
    """The backbone published as `name`, with weights checked against their sha256 and loaded strictly.

    It is the `create_backbone` model the run trained (timm contract: `forward_features`,
    `forward_head(x, pre_logits=True)` -> `[B, num_features]`); its `pretrained_cfg` holds the entry's
    input size, mean and std, so `timm.data.resolve_data_config(model=backbone)` gives its preprocessing.

    Example:
        >>> backbone = load_backbone("simclr_resnet18.fmnist32_2ep")
    """
    zoo = resolve_zoo(zoo)
    entry = get_entry(name, zoo)
    backbone = io.load_backbone(pull_entry(entry, zoo))
    backbone.pretrained_cfg = {**getattr(backbone, "pretrained_cfg", {}), **entry.pretrained_cfg()}
    return backbone
