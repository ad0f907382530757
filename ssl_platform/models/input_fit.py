"""What images a backbone takes, read from the module, and whether given images fit it.

The checks that run before a pretraining run or an evaluation (`ssl_platform.preflight`,
`evaluation.suite_validation`) ask two things of a backbone without running it on data:

- `input_facts(backbone)`: its input channels, a ViT's patch size, and the one image size a
  position table fixes (None when any size works: CNNs, `dynamic_img_size`, the grouped ViT);
- `stride_problem(backbone, ...)`: a forward on the meta device (shapes only, no memory, no
  compute), which is how a size too small for a CNN's strides shows, whatever the architecture.

`on_meta(build)` builds a backbone on the meta device for both; `fit_problems` compares images
`[channels, H, W]` with the facts. Messages are `(kind, text)` so that each caller adds the fix in
its own keys (a recipe's `data.transform.size`, a suite's `tasks.NAME.transform.size`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from ssl_platform.models.backbones import from_spec, spec


@dataclasses.dataclass
class InputFacts:
    """What a backbone takes: channels, a ViT's patch (h, w), and the size its position table fixes."""

    in_chans: int | None
    patch: tuple[int, int] | None = None
    fixed_size: tuple[int, int] | None = None


def _pair(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def input_facts(backbone: nn.Module) -> InputFacts:
    """Channels from the backbone's spec (`models.backbones.spec`), else its `in_chans` or first conv;
    the patch and fixed size from a timm `patch_embed` (or a `patch_size` attribute, the grouped ViT)."""
    in_chans = spec(backbone).get("in_chans", getattr(backbone, "in_chans", None))
    if in_chans is None:
        first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
        in_chans = first.in_channels if first is not None else None
    embed = getattr(backbone, "patch_embed", None)
    if embed is not None and hasattr(embed, "patch_size"):
        # timm's PatchEmbed asserts the size only when strict and not dynamic
        strict = getattr(embed, "strict_img_size", False) and not getattr(embed, "dynamic_img_size", False)
        fixed = _pair(getattr(embed, "img_size", None)) if strict else None
        return InputFacts(in_chans, _pair(embed.patch_size), fixed)
    return InputFacts(in_chans, _pair(getattr(backbone, "patch_size", None)))


def on_meta(build: Callable[[], nn.Module]) -> nn.Module | None:
    """`build()` with every tensor on the meta device, or None when one of its layers cannot be built
    there (e.g. one that reads a tensor's values while it is built)."""
    try:
        with torch.device("meta"):
            return build()
    except (NotImplementedError, RuntimeError):
        return None


def meta_copy(backbone: nn.Module) -> nn.Module | None:
    """The same architecture on the meta device (from its spec), or None without a spec."""
    backbone_spec = spec(backbone)
    if not backbone_spec:
        return None
    if next(backbone.parameters(), torch.empty(0)).is_meta:
        return backbone
    return on_meta(lambda: from_spec(backbone_spec))


def _multiples(side: int, step: int) -> str:
    low = side // step * step
    return f"{low} or {low + step}" if low else f"{step}"


def fit_problems(facts: InputFacts, channels: int | None, size: tuple[int, int] | None, images: str,
                 model: str) -> list[tuple[str, str]]:
    """`(kind, text)` for each way images `[channels, *size]` do not fit (None: not known, not checked).

    Kinds: `channels`, `patch` (a side not a multiple of the patch), `fixed_size` (a ViT built for
    another size). `images` and `model` say where both come from (`data.transform (size=30)`,
    `method.backbone=vit_tiny_patch16_224 (in_chans=3)`); the text starts with `images`.
    """
    problems = []
    if channels is not None and facts.in_chans is not None and channels != facts.in_chans:
        text = f"{images}: {channels}-channel images, but {model} takes {facts.in_chans}-channel images"
        problems.append(("channels", text))
    if size is None:
        return problems
    if facts.patch is not None and (size[0] % facts.patch[0] or size[1] % facts.patch[1]):
        ph, pw = facts.patch
        text = (f"{images}: {size[0]}x{size[1]} images are not tiled by the {ph}x{pw} patches of {model} (the "
                f"patch grid would drop the remainder); use a side of {_multiples(size[0], ph)}")
        problems.append(("patch", text))
    elif facts.fixed_size is not None and tuple(size) != facts.fixed_size:
        h, w = facts.fixed_size
        text = (f"{images}: {size[0]}x{size[1]} images, but {model} is built for {h}x{w} (a ViT's position "
                "table fixes its input size)")
        problems.append(("fixed_size", text))
    return problems


def stride_problem(meta_backbone: nn.Module, channels: int, size: tuple[int, int], images: str,
                   model: str) -> str | None:
    """Why `[1, channels, *size]` cannot go through `meta_backbone.forward_features` (a size too small
    for its strides), or None. The backbone must be on the meta device: nothing is computed."""
    x = torch.empty(1, channels, *size, device="meta")
    try:
        with torch.no_grad():
            out = meta_backbone.eval().forward_features(x)
    except (RuntimeError, ValueError) as err:
        return (f"{images}: {size[0]}x{size[1]} images are too small for the strides of {model} "
                f"({str(err).splitlines()[0]})")
    if out.ndim == 4 and min(out.shape[-2:]) < 1:
        return f"{images}: {size[0]}x{size[1]} images are reduced to nothing by the strides of {model}"
    return None
