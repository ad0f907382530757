"""Sparse convolution emulated with masks, for masked modelling on any timm convnet (SparK).

Tian et al., "Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked Modeling",
ICLR 2023. A masked region must stay empty through the whole encoder: if only the input were
masked, dense convolutions would fill the holes within a few layers and the network would see the
mask pattern instead of the image. `sparsify(model)` converts a timm CNN in place, keeping every
parameter name (the export loads into the plain timm model):

- Conv2d, MaxPool2d, AvgPool2d and channels-first LayerNorm (timm's `LayerNorm2d`) run densely and
  their output is zeroed at masked positions (a forward hook);
- LayerNorm and Linear applied to channels-last `[B, H, W, C]` maps (ConvNeXt blocks) likewise,
  because their biases would otherwise write into masked positions;
- BatchNorm2d becomes `SparseBatchNorm2d`: batch statistics, and so the running statistics, come
  from the visible positions only (BatchNorm1d over the gathered `[n_visible, C]` vectors);
- activations with f(0) = 0, residual sums, layer scale and drop-path keep zeros as they are.

Layers that average over positions inside a block (squeeze-excitation and its relatives, GroupNorm)
would mix masked zeros into visible features and are refused. Whenever no mask is active the
converted model computes exactly what the dense one does, so the same module serves evaluation.

The mask is a `SparseMask` shared by the converted layers (not a module-global, so two encoders can
be sparse at once): `[B, 1, h, w]` bool on the coarsest grid, True = visible, nearest-upsampled
to each layer's resolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import timm.layers
import torch
from torch import Tensor, nn

# these average over all positions of a map (or group channels with a spatial mean), so masked
# zeros would leak into visible features; SparK's authors list SE and GroupNorm as unsupported
UNSUPPORTED = (
    nn.GroupNorm, nn.InstanceNorm2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    timm.layers.SEModule, timm.layers.EffectiveSEModule, timm.layers.SqueezeExcite, timm.layers.EcaModule,
    timm.layers.CecaModule, timm.layers.GatherExcite, timm.layers.GlobalContext, timm.layers.SelectiveKernel,
    timm.layers.SplitAttn, timm.layers.BlurPool2d, timm.layers.RmsNorm2d,
)
_CHANNELS_FIRST = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, timm.layers.LayerNorm2d)
_CHANNELS_LAST = (nn.LayerNorm, nn.Linear)


class SparseMask:
    """The visibility mask every sparse layer of one encoder reads; None outside `active`."""

    def __init__(self) -> None:
        self.grid: Tensor | None = None
        self._by_size: dict[tuple[int, int], Tensor] = {}

    @contextmanager
    def active(self, grid: Tensor) -> Iterator[None]:
        """Make `grid: [B, 1, h, w]` bool (True = visible) the mask for the layers' next calls."""
        if grid.dtype != torch.bool or grid.ndim != 4 or grid.shape[1] != 1:
            raise ValueError(f"the sparse mask must be a [B, 1, h, w] bool tensor, got {grid.dtype} {tuple(grid.shape)}")
        self.grid, self._by_size = grid, {}
        try:
            yield
        finally:
            self.grid, self._by_size = None, {}

    def at(self, height: int, width: int) -> Tensor | None:
        """The mask at a `height x width` map, `[B, 1, height, width]` bool, or None when dense."""
        if self.grid is None:
            return None
        if (height, width) not in self._by_size:
            gh, gw = self.grid.shape[-2:]
            if height % gh or width % gw:
                raise ValueError(
                    f"a sparse layer produced a {height}x{width} map, not a multiple of the {gh}x{gw} mask grid; "
                    "the mask grid must be the input size divided by the encoder's total stride"
                )
            up = self.grid.repeat_interleave(height // gh, dim=2).repeat_interleave(width // gw, dim=3)
            self._by_size[(height, width)] = up
        return self._by_size[(height, width)]


class _SparseNorm:
    """BatchNorm over the visible positions only: `[B, C, H, W]` -> `[B, C, H, W]`, zeros where masked."""

    sparse_mask: SparseMask | None = None

    def forward(self, x: Tensor) -> Tensor:
        mask = self.sparse_mask.at(*x.shape[-2:]) if self.sparse_mask is not None else None
        if mask is None:
            return super().forward(x)
        visible = mask[:, 0]                                        # [B, H, W]
        vectors = x.permute(0, 2, 3, 1)[visible]                    # [n_visible, C]
        # a [n, C, 1, 1] batch gives BatchNorm2d the statistics BatchNorm1d takes over [n, C]
        normed = super().forward(vectors[:, :, None, None]).flatten(1)
        out = normed.new_zeros(x.shape[0], x.shape[2], x.shape[3], x.shape[1])
        out[visible] = normed
        return out.permute(0, 3, 1, 2)


class SparseBatchNorm2d(_SparseNorm, nn.BatchNorm2d):
    """`nn.BatchNorm2d` whose statistics come from visible positions (same parameters and buffers)."""

    def as_sync_batchnorm(self) -> SparseSyncBatchNorm2d:
        """The synchronised version, for `distributed.convert_sync_batchnorm` under DDP."""
        return _renormed(self, SparseSyncBatchNorm2d, self.sparse_mask)


class SparseSyncBatchNorm2d(_SparseNorm, nn.SyncBatchNorm):
    """`nn.SyncBatchNorm` over visible positions: the visible vectors of every process count."""


def _renormed(old: nn.modules.batchnorm._BatchNorm, cls: type, mask: SparseMask | None) -> nn.Module:
    """A `cls` norm sharing `old`'s parameters and buffers (so the state dict keeps its names)."""
    new = cls(old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats)
    if old.affine:
        new.weight, new.bias = old.weight, old.bias
    if old.track_running_stats:
        new.running_mean, new.running_var = old.running_mean, old.running_var
        new.num_batches_tracked = old.num_batches_tracked
    new.sparse_mask = mask
    return new.train(old.training)


def _zero_masked_nchw(module: nn.Module, inputs: tuple, out: Tensor) -> Tensor | None:
    mask = module.sparse_mask.at(*out.shape[-2:])
    return None if mask is None else out.masked_fill(~mask, 0.0)


def _zero_masked_nhwc(module: nn.Module, inputs: tuple, out: Tensor) -> Tensor | None:
    if out.ndim != 4:  # a Linear on tokens or pooled features: not a map
        return None
    mask = module.sparse_mask.at(out.shape[1], out.shape[2])
    return None if mask is None else out.masked_fill(~mask.permute(0, 2, 3, 1), 0.0)


def sparse_batchnorm(num_features: int, mask: SparseMask) -> SparseBatchNorm2d:
    """A fresh `SparseBatchNorm2d` reading `mask` (for layers outside the encoder, e.g. SparK's densify)."""
    norm = SparseBatchNorm2d(num_features)
    norm.sparse_mask = mask
    return norm


def sparsify(model: nn.Module) -> SparseMask:
    """Convert `model` in place into a sparse encoder; return the `SparseMask` its layers read.

    Parameter and buffer names do not change. Raises ValueError naming the first layer that cannot
    be made sparse; RuntimeError if the model was converted already.
    """
    if isinstance(getattr(model, "sparse_mask", None), SparseMask):
        # the model's state, not its type, is wrong: a second conversion would wrap the sparse layers again
        raise RuntimeError("this model is sparse already; sparsify it once and keep the SparseMask it returned")  # noqa: TRY004
    for name, module in model.named_modules():
        if isinstance(module, UNSUPPORTED) and not _is_head(name, model):
            raise ValueError(
                f"{name} ({type(module).__name__}) averages over spatial positions, so masked zeros would leak "
                "into visible features; sparse masked modelling needs a backbone without it (resnet*, convnext*)"
            )
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and type(module) not in (nn.BatchNorm2d, nn.SyncBatchNorm):
            raise ValueError(
                f"{name} is a {type(module).__name__}; only plain BatchNorm2d/SyncBatchNorm can be made sparse"
            )
    mask = SparseMask()
    model.sparse_mask = mask
    _swap_batchnorms(model, mask)
    for module in model.modules():
        if isinstance(module, _SparseNorm):
            continue
        if isinstance(module, _CHANNELS_FIRST):
            module.sparse_mask = mask
            module.register_forward_hook(_zero_masked_nchw)
        elif isinstance(module, _CHANNELS_LAST):
            module.sparse_mask = mask
            module.register_forward_hook(_zero_masked_nhwc)
    return mask


def _is_head(name: str, model: nn.Module) -> bool:
    """The classifier's global pool runs only in `forward_head`, never on a masked map."""
    return name.split(".")[0] in {"global_pool", "head", "fc"}


def _swap_batchnorms(module: nn.Module, mask: SparseMask) -> None:
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            setattr(module, name, _renormed(child, SparseBatchNorm2d, mask))
        elif type(child) is nn.SyncBatchNorm:
            setattr(module, name, _renormed(child, SparseSyncBatchNorm2d, mask))
        else:
            _swap_batchnorms(child, mask)
