"""Multi-block masks for I-JEPA: several target blocks and one context block with the targets removed.

Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture",
CVPR 2023 (facebookresearch/ijepa, `src/masks/multiblock.py`).

Pure functions over a patch grid: randomness comes from the `generator` argument (None: torch's
global RNG, which the engine checkpoints, so a resumed run draws the same masks). Indices are
row-major patch numbers `row * grid_w + col`, sorted, so they gather from `[B, N, D]` token tensors.

The block *shape* is drawn once per batch (every image's targets have the same number of patches,
so they stack without truncation); the block *positions* are drawn per image. Where this differs
from the official collator (documented in docs/methods.md, I-JEPA section):
- scale and aspect ratio come from two independent draws (the official code reuses one), the aspect
  ratio log-uniformly so that 0.75-1.5 is symmetric around square;
- a block may touch the last row and column (the official `randint(0, H - h)` never places one there);
- when contexts differ in size, each is cut to the batch minimum by dropping random patches (the
  official code drops the highest indices, i.e. the bottom-right of the context).
"""

from __future__ import annotations

import math

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


def place_block(grid: tuple[int, int], shape: tuple[int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """`[gh, gw]` bool, True inside an `h x w` block at a uniformly random position."""
    (gh, gw), (h, w) = grid, shape
    top = int(torch.randint(0, gh - h + 1, (), generator=generator))
    left = int(torch.randint(0, gw - w + 1, (), generator=generator))
    block = torch.zeros(gh, gw, dtype=torch.bool)
    block[top:top + h, left:left + w] = True
    return block


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
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """I-JEPA's masks for one batch (defaults: the paper's ViT-H/14 settings).

    Returns:
        context: `[B, Nc]` int64 patch indices the context encoder sees; never any target patch;
            `Nc >= min_keep`, the smallest context of the batch.
        targets: `[num_targets, B, Nt]` int64 patch indices of each target block (`Nt = h * w`, the
            same for every block of the batch). Target blocks may overlap each other.

    Raises ValueError if, after `max_tries` placements for one image, the targets leave fewer than
    `min_keep` context patches (the settings cannot be met on this grid).
    """
    gh, gw = grid
    if num_targets < 1:
        raise ValueError(f"num_targets must be at least 1, got {num_targets}")
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


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x: [B, N, D]`, `index: [B, K]` -> `[B, K, D]`, the tokens at `index` of each row."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
