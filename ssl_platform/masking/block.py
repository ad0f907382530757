"""Multi-block masks for I-JEPA: several target blocks and one context block with the targets removed.

Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture",
CVPR 2023 (facebookresearch/ijepa, `src/masks/multiblock.py`).

Pure functions over a patch grid: randomness comes from the `generator` argument (None: torch's
global RNG, which the engine checkpoints, so a resumed run draws the same masks). Indices are
row-major patch numbers `row * grid_w + col`, sorted, so they gather from `[B, N, D]` token tensors.

The block *shape* is drawn once per batch (every image's targets have the same number of patches,
so they stack without truncation); the block *positions* are drawn per image. Two samplers:

- `official_collator=False` (the default; the paper's description, our choices where it is silent): scale uniform and aspect ratio
  log-uniform, two independent draws (so 0.75-1.5 is symmetric around square); a block may span the
  whole grid (a context of scale 1.0 is the whole image) and may touch the last row and column;
  `min_keep` bounds the context only (`>=`), and settings that cannot meet it after `max_tries`
  placements raise; contexts longer than the batch minimum lose random patches.
- `official_collator=True` (facebookresearch/ijepa `src/masks/multiblock.py`, the released code the
  paper's numbers come from): one uniform draw sets both scale and aspect ratio (linearly),
  `int(scale * patches)` patches, sides rounded and then cut below the grid side (`grid - 1`: a
  block never spans a whole row or column), positions from the exclusive `randint(0, H - h)` (never
  the last row or column: at context scale 0.85-1.0 on grids up to 19x19 the context block is the
  top-left `(H-1) x (W-1)` every time, and it holds every target); a block is valid with `> min_keep` patches, targets included; a context that fails
  `max_tries` times is retried with one target fewer cut out, the last one first (so it may then
  overlap targets); contexts are cut to the batch minimum by keeping their lowest indices (the top
  rows). Where the official code would loop forever (a block that can never exceed `min_keep`,
  e.g. the 2x3 targets of a 7x7 grid at `min_keep=10`), this raises instead. Only the semantics are
  reproduced, not the random stream.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import torch


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def block_shape(grid: tuple[int, int], scale: float, aspect: float) -> tuple[int, int]:
    """`(h, w)` in patches of a block covering about `scale` of `grid` with `h / w` about `aspect`,
    clipped to the grid and at least 1x1."""
    gh, gw = grid
    area = scale * gh * gw
    h = min(gh, max(1, round(math.sqrt(area * aspect))))
    w = min(gw, max(1, round(math.sqrt(area / aspect))))
    return h, w


def sample_block_shape(
    grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float], generator: torch.Generator | None = None
) -> tuple[int, int]:
    """A block shape with scale uniform in `scale` and aspect ratio log-uniform in `aspect`."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"block scale must satisfy 0 < low <= high <= 1, got {tuple(scale)}")
    if not 0 < aspect[0] <= aspect[1]:
        raise ValueError(f"block aspect ratio must satisfy 0 < low <= high, got {tuple(aspect)}")
    s = _uniform(scale[0], scale[1], generator)
    a = math.exp(_uniform(math.log(aspect[0]), math.log(aspect[1]), generator))
    return block_shape(grid, s, a)


def place_block(grid: tuple[int, int], shape: tuple[int, int], generator: torch.Generator | None = None,
                last_line: bool = True) -> torch.Tensor:
    """`[gh, gw]` bool, True inside an `h x w` block at a uniformly random position; `last_line=False`
    is the official `randint(0, H - h)`, whose exclusive bound never reaches the last row or column."""
    (gh, gw), (h, w) = grid, shape
    end = 1 if last_line else 0
    top = int(torch.randint(0, gh - h + end, (), generator=generator))
    left = int(torch.randint(0, gw - w + end, (), generator=generator))
    block = torch.zeros(gh, gw, dtype=torch.bool)
    block[top:top + h, left:left + w] = True
    return block


def official_block_shape(grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float],
                         u: float) -> tuple[int, int]:
    """The official collator's `(h, w)` for its one uniform draw `u` in [0, 1): scale and aspect ratio both
    at `u` of their ranges, `int(scale * gh * gw)` patches, sides rounded, then cut to at most grid - 1."""
    gh, gw = grid
    area = int(gh * gw * (scale[0] + u * (scale[1] - scale[0])))
    ratio = aspect[0] + u * (aspect[1] - aspect[0])
    return min(round(math.sqrt(area * ratio)), gh - 1), min(round(math.sqrt(area / ratio)), gw - 1)


def multiblock_masks(
    batch_size: int,
    grid: tuple[int, int],
    *,
    num_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    context_aspect: tuple[float, float] = (1.0, 1.0),
    min_keep: int = 10,
    max_tries: int = 20,
    official_collator: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """I-JEPA's masks for one batch (defaults: the paper's ViT-H/14 settings; the two samplers: module docstring).

    Returns:
        context: `[B, Nc]` int64 patch indices the context encoder sees, the smallest context of the
            batch: `Nc >= min_keep` and never a target patch (`official_collator`: `Nc > min_keep`,
            and a context retried `max_tries` times may keep some target patches, as officially).
        targets: `[num_targets, B, Nt]` int64 patch indices of each target block (`Nt = h * w`, the
            same for every block of the batch). Target blocks may overlap each other.

    Raises ValueError if, after `max_tries` placements for one image, the targets leave fewer than
    `min_keep` context patches (the settings cannot be met on this grid), or, with
    `official_collator`, if a block can never exceed `min_keep` (where the official code never returns).
    """
    gh, gw = grid
    if num_targets < 1:
        raise ValueError(f"num_targets must be at least 1, got {num_targets}")
    if official_collator:
        contexts, targets = _official_masks(batch_size, grid, num_targets, target_scale, target_aspect,
                                            context_scale, context_aspect, min_keep, max_tries, generator)
        keep = min(len(c) for c in contexts)
        # the official truncation: each context's first (lowest-index, top-row) patches
        return torch.stack([c[:keep] for c in contexts]), torch.stack(targets, dim=1)
    t_shape = sample_block_shape(grid, target_scale, target_aspect, generator)
    c_shape = sample_block_shape(grid, context_scale, context_aspect, generator)
    contexts, targets = [], []
    for _ in range(batch_size):
        for _ in range(max_tries):
            blocks = [place_block(grid, t_shape, generator) for _ in range(num_targets)]
            context = place_block(grid, c_shape, generator) & ~torch.stack(blocks).any(0)
            if int(context.sum()) >= min_keep:
                break
        else:
            raise ValueError(
                f"{num_targets} target blocks of {t_shape[0]}x{t_shape[1]} patches left fewer than min_keep={min_keep} "
                f"context patches on a {gh}x{gw} grid in {max_tries} tries; use larger images or smaller patches, "
                "fewer or smaller targets (num_targets, target_scale), or a lower min_keep"
            )
        contexts.append(context.flatten().nonzero().squeeze(1))
        targets.append(torch.stack([b.flatten().nonzero().squeeze(1) for b in blocks]))
    keep = min(len(c) for c in contexts)
    # drop random context patches down to the batch minimum (uniformly, not from one corner)
    contexts = [c if len(c) == keep else c[torch.randperm(len(c), generator=generator)[:keep].sort().values]
                for c in contexts]
    return torch.stack(contexts), torch.stack(targets, dim=1)


def check_official_collator(
    grid: tuple[int, int], target_scale: tuple[float, float], target_aspect: tuple[float, float],
    context_scale: tuple[float, float], context_aspect: tuple[float, float], min_keep: int, draws: int = 10000,
) -> None:
    """Raise ValueError if some block the official collator can draw (one shape per uniform draw, checked
    on `draws + 1` evenly spaced draws) never exceeds `min_keep`: the official code would loop forever."""
    shapes = {kind: {official_block_shape(grid, scale, aspect, i / draws) for i in range(draws + 1)}
              for kind, scale, aspect in (("target", target_scale, target_aspect),
                                          ("context", context_scale, context_aspect))}
    _check_official_shapes(grid, shapes, min_keep)


def _check_official_shapes(grid: tuple[int, int], shapes: dict[str, Collection[tuple[int, int]]], min_keep: int) -> None:
    for kind, options in shapes.items():
        for h, w in sorted(options):
            if h * w <= min_keep:
                raise ValueError(
                    f"official_collator: a {kind} block of {h}x{w} patches on a {grid[0]}x{grid[1]} grid never "
                    f"exceeds min_keep={min_keep} (the official collator would loop forever); lower min_keep, use a "
                    "finer grid, or official_collator=false"
                )


def _official_masks(
    batch_size: int, grid: tuple[int, int], num_targets: int, target_scale: tuple[float, float],
    target_aspect: tuple[float, float], context_scale: tuple[float, float], context_aspect: tuple[float, float],
    min_keep: int, max_tries: int, generator: torch.Generator | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image, the context indices `[Nc_i]` and the targets `[num_targets, Nt]` of the official collator."""
    t_shape = official_block_shape(grid, target_scale, target_aspect, _uniform(0.0, 1.0, generator))
    c_shape = official_block_shape(grid, context_scale, context_aspect, _uniform(0.0, 1.0, generator))
    _check_official_shapes(grid, {"target": [t_shape], "context": [c_shape]}, min_keep)
    contexts, targets = [], []
    for _ in range(batch_size):
        blocks = torch.stack([place_block(grid, t_shape, generator, last_line=False) for _ in range(num_targets)])
        cut, tries = num_targets, 0
        while True:
            context = place_block(grid, c_shape, generator, last_line=False) & ~blocks[:cut].any(0)
            if int(context.sum()) > min_keep:
                break
            tries += 1
            if tries == max_tries:  # the official relaxation: cut out one target fewer, the last one first
                cut, tries = cut - 1, 0
        contexts.append(context.flatten().nonzero().squeeze(1))
        targets.append(blocks.flatten(1).nonzero()[:, 1].view(num_targets, -1))
    return contexts, targets


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x: [B, N, D]`, `index: [B, K]` -> `[B, K, D]`, the tokens at `index` of each row."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
