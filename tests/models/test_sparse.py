"""The sparse encoder of SparK (models/sparse.py): masked positions stay exactly zero through every
layer, hidden pixels cannot influence any feature, BatchNorm sees visible positions only, and the
conversion renames nothing."""

import copy
import re

import pytest
import timm
import torch
from torch import nn

from ssl_platform import distributed
from ssl_platform.models.backbones import create_backbone
from ssl_platform.models.sparse import (
    SparseBatchNorm2d,
    SparseMask,
    SparseSyncBatchNorm2d,
    sparse_batchnorm,
    sparsify,
)

ARCHS = {
    # (timm name, kwargs, image side): the mask grid is side / 32 = 2x2 in each case
    "resnet18": ("resnet18", {}, 64),
    "convnext_conv_mlp": ("convnext_atto", {}, 64),  # 1x1 convs and LayerNorm2d in its blocks
    "convnext_linear": ("convnext_atto", {"conv_mlp": False}, 64),  # channels-last LayerNorm and Linear
}


def _grid(batch: int, cells: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    grid = torch.rand(batch, 1, cells, cells, generator=g) < 0.5
    grid[:, :, 0, 0] = True  # at least one visible and one hidden cell per sample
    grid[:, :, -1, -1] = False
    return grid


def _model(arch: str) -> tuple[nn.Module, int]:
    name, kwargs, side = ARCHS[arch]
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=0, **kwargs)
    # timm zero-initialises biases (and ResNet's last BN per block): with those, a layer that lets
    # its bias into masked positions would go unnoticed
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model, side


def _encode(model: nn.Module, mask: SparseMask, x: torch.Tensor, grid: torch.Tensor) -> list[torch.Tensor]:
    with mask.active(grid):
        x = x.masked_fill(~mask.at(*x.shape[-2:]), 0.0)
        return model.forward_intermediates(x, indices=4, intermediates_only=True)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_layer_outputs_exact_zeros_at_masked_positions(arch):
    model, side = _model(arch)
    mask = sparsify(model)
    grid = _grid(3, side // 32)
    names = {m: n for n, m in model.named_modules()}
    outputs = []

    def record(module, inputs, out):
        if isinstance(out, torch.Tensor) and out.ndim == 4:
            outputs.append((names[module], out))

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    _encode(model.train(), mask, torch.randn(3, 3, side, side), grid)
    for h in handles:
        h.remove()
    checked = 0
    for name, out in outputs:
        # ConvNeXt blocks without conv_mlp run their norm and MLP on [B, H, W, C]
        channels_last = arch == "convnext_linear" and re.search(r"blocks\.\d+\.(norm|mlp)", name) is not None
        o = out.permute(0, 3, 1, 2) if channels_last else out
        h, w = o.shape[-2:]
        hidden = ~grid.repeat_interleave(h // grid.shape[-2], 2).repeat_interleave(w // grid.shape[-1], 3)
        assert hidden.any()
        assert (o.masked_select(hidden) == 0).all(), f"{name} leaks into masked positions"
        checked += 1
    assert checked > 20


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_hidden_pixels_cannot_change_any_feature_but_they_do_in_the_dense_model(arch):
    model, side = _model(arch)
    dense = copy.deepcopy(model).eval()
    mask = sparsify(model)
    model.eval()
    grid = _grid(2, side // 32, seed=1)
    x = torch.randn(2, 3, side, side)
    hidden = ~grid.repeat_interleave(32, 2).repeat_interleave(32, 3)
    edited = torch.where(hidden, torch.randn_like(x) * 10, x)
    a, b = _encode(model, mask, x, grid), _encode(model, mask, edited, grid)
    for fa, fb in zip(a, b):
        assert torch.equal(fa, fb)
    # the same edit seen through the input mask only (dense layers fill the holes) changes features
    visible_only = lambda t: t.masked_fill(hidden, 0.0)
    da = dense.forward_intermediates(visible_only(x), indices=4, intermediates_only=True)[-1]
    hidden_coarse = ~grid.expand(-1, da.shape[1], -1, -1)
    assert da.masked_select(hidden_coarse).abs().sum() > 0, "dense convolutions should fill masked cells"


def test_sparse_batchnorm_equals_batchnorm1d_over_the_visible_vectors():
    torch.manual_seed(0)
    mask = SparseMask()
    sparse = sparse_batchnorm(8, mask)
    reference = nn.BatchNorm1d(8)
    with torch.no_grad():
        for bn in (sparse, reference):
            bn.weight.copy_(torch.linspace(0.5, 2.0, 8))
            bn.bias.copy_(torch.linspace(-1.0, 1.0, 8))
    x = torch.randn(4, 8, 6, 6) * 3 + 1
    grid = _grid(4, 3, seed=2)
    visible = grid.repeat_interleave(2, 2).repeat_interleave(2, 3)[:, 0]   # [4, 6, 6]
    with mask.active(grid):
        out = sparse(x)
    vectors = x.permute(0, 2, 3, 1)[visible]                                 # [n, 8]
    expected = reference(vectors)
    torch.testing.assert_close(out.permute(0, 2, 3, 1)[visible], expected)
    assert (out.permute(0, 2, 3, 1)[~visible] == 0).all()
    torch.testing.assert_close(sparse.running_mean, reference.running_mean)
    torch.testing.assert_close(sparse.running_var, reference.running_var)


def test_values_in_masked_cells_leave_the_running_statistics_alone():
    mask = SparseMask()
    a, b = sparse_batchnorm(4, mask), sparse_batchnorm(4, mask)
    x = torch.randn(2, 4, 4, 4)
    grid = _grid(2, 2, seed=3)
    hidden = ~grid.repeat_interleave(2, 2).repeat_interleave(2, 3)
    with mask.active(grid):
        a(x)
        b(x.masked_fill(hidden, 1e6))
    assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)
    assert a.running_mean.abs().max() < 1.0


def test_without_a_mask_the_converted_model_computes_what_the_dense_one_does():
    model, side = _model("resnet18")
    dense = copy.deepcopy(model)
    sparsify(model)
    x = torch.randn(4, 3, side, side)
    for mode in (True, False):
        model.train(mode), dense.train(mode)
        torch.testing.assert_close(model(x), dense(x), rtol=0, atol=0)
    for name, buf in dense.named_buffers():
        assert torch.equal(buf, dict(model.named_buffers())[name])


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_conversion_keeps_every_parameter_and_buffer_name(arch):
    model, _ = _model(arch)
    before = {k: v.shape for k, v in model.state_dict().items()}
    sparsify(model)
    assert {k: v.shape for k, v in model.state_dict().items()} == before
    fresh = timm.create_model(ARCHS[arch][0], num_classes=0, **ARCHS[arch][1])
    fresh.load_state_dict(model.state_dict(), strict=True)


def test_small_input_backbone_converts_and_its_batchnorms_become_sparse():
    model = create_backbone("resnet18", small_input=True, in_chans=1, channels=[8, 16, 32, 64])
    sparsify(model)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, SparseBatchNorm2d) for m in norms)


def test_layers_that_average_over_positions_are_refused_with_their_name():
    with pytest.raises(ValueError, match=r"layer1\.0\.se .*SEModule.*resnet\*, convnext\*"):
        sparsify(timm.create_model("seresnet18", num_classes=0))
    with pytest.raises(ValueError, match="GroupNorm"):
        sparsify(nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8)))
    model = timm.create_model("resnet18", num_classes=0)
    sparsify(model)
    with pytest.raises(RuntimeError, match="sparse already"):
        sparsify(model)


def test_a_mask_grid_that_does_not_divide_the_map_is_an_error():
    mask = SparseMask()
    with mask.active(torch.ones(1, 1, 3, 3, dtype=torch.bool)), pytest.raises(ValueError, match="not a multiple of the 3x3"):
        mask.at(8, 8)
    with pytest.raises(ValueError, match=r"\[B, 1, h, w\] bool"), mask.active(torch.ones(1, 3, 3)):
        pass
    assert mask.at(8, 8) is None


def test_sync_conversion_keeps_the_sparse_norm_and_its_parameters():
    model, side = _model("resnet18")
    mask = sparsify(model)
    weight = model.bn1.weight
    converted = distributed.convert_sync_batchnorm(model)
    norms = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(type(m) is SparseSyncBatchNorm2d for m in norms)
    assert converted.bn1.weight is weight and converted.bn1.sparse_mask is mask
    plain = distributed.convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
    assert type(plain[1]) is nn.SyncBatchNorm
    # outside a process group SyncBatchNorm computes plain batch norm: same result as before conversion
    reference, _ = _model("resnet18")
    ref_mask = sparsify(reference)
    grid, x = _grid(2, side // 32), torch.randn(2, 3, side, side)
    for a, b in zip(_encode(converted.train(), mask, x, grid), _encode(reference.train(), ref_mask, x, grid)):
        torch.testing.assert_close(a, b)
