"""Backbones: any timm model by name, plus the small-input stem for 28-32 px images.

Every backbone keeps timm's contract (`num_features`, `forward_features`, `forward_head(x,
pre_logits=True)`), so methods and evaluation never special-case an architecture. `spec(backbone)`
returns the keyword arguments that rebuild it; they travel in `backbone.safetensors`' metadata so a
file alone is enough to load the weights back.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from ssl_platform.models import convnet, graph, grouped_vit, tabular  # noqa: F401  (register plain_convnet, gat, gin, grouped_vit*, tabular_transformer)
from ssl_platform.models.safe_kwargs import FILE_LOADING_KWARGS, check_timm_kwargs  # noqa: F401  (re-exported)

SPEC_ATTR = "_ssl_platform_spec"


def create_backbone(
    name: str, *, small_input: bool = False, stem_stride: int = 1, in_chans: int = 3, **timm_kwargs: Any
) -> nn.Module:
    """Build `timm.create_model(name, num_classes=0, ...)` with randomly initialised weights.

    Args:
        name: any timm model name (`resnet18`, `vit_small_patch16_224`, ...).
        small_input: swap a ResNet-style stem (7x7 stride-2 conv + max-pool, 4x downsampling) for a
            3x3 stride-1 conv without max-pool, as SimCLR does for CIFAR: at 28-32 px the original
            stem leaves a 7x7 map after the first stage and throws most of the image away.
            ViTs take `img_size`/`patch_size` kwargs instead.
        stem_stride: stride of the small-input stem conv; 2 halves the resolution of every stage
            (4x fewer FLOPs), a CPU-budget compromise between the two stems.
        in_chans: input channels (1 for MNIST-like data).
        **timm_kwargs: passed to timm (e.g. `channels=[32, 64, 128, 256]` for a narrower ResNet).

    Returns:
        The backbone, with no classifier (`forward_head(..., pre_logits=True)` gives `[B, num_features]`).
    """
    if not timm.is_model(name.split(".")[0]):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise ValueError(f"unknown timm backbone {name!r}; similar names: {close or 'none'} (see timm.list_models())")
    check_timm_kwargs(timm_kwargs, f"backbone {name!r}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in timm_kwargs.items()}
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    if small_input:
        _small_input_stem(model, name, stem_stride)
    elif stem_stride != 1:
        raise ValueError("stem_stride applies to the small-input stem only; set small_input=True as well")
    backbone_spec = {"name": name, "small_input": small_input, "in_chans": in_chans, **timm_kwargs}
    if stem_stride != 1:
        backbone_spec["stem_stride"] = stem_stride
    setattr(model, SPEC_ATTR, backbone_spec)
    return model


def _small_input_stem(model: nn.Module, name: str, stride: int) -> None:
    conv, pool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if not isinstance(conv, nn.Conv2d) or pool is None:
        raise ValueError(
            f"small_input=True is defined for ResNet-style models (conv1 + maxpool); {name} has neither. "
            "For a ViT pass img_size=... and patch_size=... instead."
        )
    model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=stride, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


def spec(backbone: nn.Module) -> dict[str, Any]:
    """The kwargs of `create_backbone` that rebuild `backbone` (empty if it was not built here)."""
    return dict(getattr(backbone, SPEC_ATTR, {}))


def from_spec(backbone_spec: dict[str, Any]) -> nn.Module:
    """Inverse of `spec`: a fresh, randomly initialised backbone of the same architecture."""
    kwargs = dict(backbone_spec)
    return create_backbone(kwargs.pop("name"), **kwargs)


def pooled_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The representation every evaluation uses: `x: [B, C, H, W]` -> `[B, num_features]`."""
    return backbone.forward_head(backbone.forward_features(x), pre_logits=True)
