"""timm's model contract, for every image model this project registers with timm.

The kind of checks timm's own `tests/test_models.py` runs on its registry, written for ours: the
default cfg (input size, mean/std, first conv, classifier, pool size), forward and backward at the
cfg's input size, the head (`num_classes`, `num_features`, `head_hidden_size`, `forward_head`,
`reset_classifier`), `features_only=True` against `feature_info`, `forward_intermediates` and
`prune_intermediate_layers`, gradient checkpointing, TorchScript and torch.fx (traced as timm traces,
with its lists of leaf modules and functions), and a traced model scripted.

The models come from timm's registry: every name whose entry point lives in `ssl_platform`, so a new
registration is tested without editing this file. Each registering module is either an image model's
(with small sizes in `TINY`) or named in `NON_IMAGE` with the reason it is not one; the first test
fails for a module in neither. The fast cases build the `TINY` sizes; the registered sizes run in the
one slow test.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import timm
import torch
import torch_geometric  # noqa: F401  (swaps torch.index_select for Python that TorchScript cannot compile)
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import ssl_platform.models.backbones  # noqa: F401  (registers every model of ssl_platform.models with timm)
from ssl_platform.models.grouped_vit import sincos_2d_table
from ssl_platform.models.pos_embed import sincos_2d

NON_IMAGE = {
    "ssl_platform.models.graph": "graph encoders take node features and edges (x, edge_index), not images",
    "ssl_platform.models.tabular": "the tabular transformer takes table rows (x_num, x_cat), not images",
}
# widths and depths only: input size, strides and band groups stay as registered, so the cfg's
# pool_size still holds; depth 3 keeps timm's three feature levels of a ViT's features_only
TINY = {
    "ssl_platform.models.convnet": {"channels": (8, 16, 32)},
    "ssl_platform.models.grouped_vit": {"embed_dim": 64, "group_dim": 16, "depth": 3, "num_heads": 2},
}
KNOWN = {"plain_convnet", "grouped_vit", "grouped_vit_base_patch8_96", "grouped_vit_large_patch8_96"}
JIT_DEPRECATED = "ignore:`torch.jit.*` is deprecated:FutureWarning"


def registered() -> dict[str, str]:
    """Every timm model name registered from `ssl_platform`, with the module that registers it."""
    modules = {name: timm.models.model_entrypoint(name).__module__ for name in timm.list_models()}
    return {name: module for name, module in modules.items() if module.startswith("ssl_platform.")}


IMAGE_MODELS = sorted(name for name, module in registered().items() if module not in NON_IMAGE)


def build(name: str, **kwargs) -> torch.nn.Module:
    """`timm.create_model(name)` at its module's `TINY` sizes, with fixed initial weights."""
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **TINY.get(registered()[name], {}), **kwargs)


def images(model: torch.nn.Module, batch: int) -> torch.Tensor:
    """A random batch at the model's cfg input size."""
    torch.manual_seed(1)
    return torch.randn(batch, *model.pretrained_cfg["input_size"])


def feature_axis(model: torch.nn.Module) -> int:
    """Where `forward_features` puts the channels: 1 for maps `[B, C, H, W]`, -1 for tokens `[B, N, D]`."""
    fmt = getattr(model, "output_fmt", "NCHW")
    assert fmt in ("NCHW", "NLC"), f"unknown output_fmt {fmt!r}"
    return 1 if fmt == "NCHW" else -1


def test_every_registering_module_is_classified_and_the_known_models_are_found():
    modules = set(registered().values())
    unclassified = modules - set(TINY) - set(NON_IMAGE)
    assert not unclassified, (f"{sorted(unclassified)} register timm models: add small sizes of their image models "
                              "to TINY, or the reason they are not image models to NON_IMAGE")
    assert set(TINY) | set(NON_IMAGE) <= modules, "TINY / NON_IMAGE name a module that registers nothing"
    assert not set(TINY) & set(NON_IMAGE)
    assert KNOWN <= set(IMAGE_MODELS)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_default_cfg_describes_the_input_and_names_real_layers(name):
    model = build(name, num_classes=5).eval()
    cfg = model.pretrained_cfg
    chans, h, w = cfg["input_size"]
    assert cfg["architecture"] == name and min(chans, h, w) > 0 and not cfg["fixed_input_size"]
    assert model.in_chans == chans  # timm derives in_chans from input_size when it is not given
    assert len(cfg["mean"]) == len(cfg["std"]) == chans and min(cfg["std"]) > 0
    assert cfg["num_classes"] >= 0 and 0 < cfg["crop_pct"] <= 1
    state = model.state_dict()
    first = (cfg["first_conv"],) if isinstance(cfg["first_conv"], str) else cfg["first_conv"]
    assert all(f"{conv}.weight" in state for conv in first)
    # the first convs see every input band between them, each once
    assert sum(model.get_submodule(conv).in_channels for conv in first) == chans
    assert state[f"{cfg['classifier']}.weight"].shape == (5, model.head_hidden_size)
    assert model.get_classifier() is model.get_submodule(cfg["classifier"])
    feats = model.forward_features(images(model, 1))
    if feature_axis(model) == 1:
        assert feats.shape[-2:] == cfg["pool_size"]
    else:
        assert cfg["pool_size"] is None  # tokens have no pooled map


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_forward_and_backward_at_the_cfg_input_size_reach_every_parameter(name):
    model = build(name, num_classes=7).train()
    out = model(images(model, 2))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert model.eval()(images(model, 1)).shape == (1, 7)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_head_pooling_and_reset_classifier(name):
    model = build(name, num_classes=5).eval()
    axis, x = feature_axis(model), images(model, 2)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert feats.shape[axis] == model.num_features
        assert pre.shape == (2, model.head_hidden_size)
        assert model.num_classes == 5 and torch.equal(model(x), model.forward_head(feats))
        model.reset_classifier(0)
        assert model.num_classes == 0 and torch.equal(model(x), pre)
        model.reset_classifier(3)
        assert model.num_classes == 3 and model.get_classifier().out_features == 3 and model(x).shape == (2, 3)
        model.reset_classifier(0, "")  # no classifier, no pooling: the unpooled features
        assert model.num_classes == 0 and torch.equal(model(x), feats)
        unpooled = build(name, num_classes=0, global_pool="").eval()
        assert torch.equal(unpooled(x), unpooled.forward_features(x))
    with pytest.raises(ValueError, match="global_pool='max'"):
        model.reset_classifier(0, "max")


@pytest.mark.parametrize("feature_cls", [None, "getter"])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_features_only_gives_what_feature_info_says(name, feature_cls):
    extra = {} if feature_cls is None else {"feature_cls": feature_cls}
    features = build(name, features_only=True, **extra).eval()
    full = build(name).eval()  # same seed: the same weights
    x = images(full, 2)
    channels, reductions = features.feature_info.channels(), features.feature_info.reduction()
    assert len(channels) >= 3 and features.pretrained_cfg["input_size"] == full.pretrained_cfg["input_size"]
    with torch.no_grad():
        outs = features(x)
        wanted = full.forward_intermediates(x, indices=list(features.feature_info.out_indices), intermediates_only=True)
    assert len(outs) == len(channels) == len(wanted)
    for out, c, r, ref in zip(outs, channels, reductions, wanted):
        assert out.shape == (2, c, x.shape[-2] // r, x.shape[-1] // r)
        torch.testing.assert_close(out, ref)
    one = build(name, features_only=True, out_indices=(1,), **extra).eval()
    with torch.no_grad():
        [out] = one(x)
    torch.testing.assert_close(out, full.forward_intermediates(x, indices=[1], intermediates_only=True)[0])


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_forward_intermediates_indices_norm_formats(name):
    model = build(name).eval()
    x = images(model, 2)
    native = "NCHW" if feature_axis(model) == 1 else "NLC"
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert len(inter) == len(model.feature_info)
        for y, info in zip(inter, model.feature_info):
            r = info["reduction"]
            assert y.shape == (2, info["num_chs"], x.shape[-2] // r, x.shape[-1] // r) and torch.isfinite(y).all()
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)  # an int: the last n
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        early = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(last_two + picked + early, inter[-2:] + [inter[0], inter[-1]] + [inter[0]]))
        # with the final norm applied, the last block's tokens (or map) are forward_features
        _, normed = model.forward_intermediates(x, indices=1, norm=True, output_fmt=native)
        torch.testing.assert_close(normed[0], final)
    with pytest.raises((ValueError, AssertionError), match="out of range"):
        model.forward_intermediates(x, indices=[len(model.feature_info)])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_grouped_vit_nchw_intermediates_are_each_groups_token_map():
    model = build("grouped_vit_base_patch8_96").eval()
    x = images(model, 2)
    g, d, (h, w) = model.num_groups, model.embed_dim, model.grid(x)
    with torch.no_grad():
        [maps] = model.forward_intermediates(x, indices=1, intermediates_only=True)
        [tokens] = model.forward_intermediates(x, indices=1, output_fmt="NLC", intermediates_only=True)
    assert g == 3 and maps.shape == (2, g * d, h, w) and tokens.shape == (2, g * h * w, d)
    for group in range(g):  # group g's tokens, row-major over the grid, are channels g*D..(g+1)*D-1
        grid_tokens = tokens[:, group * h * w:(group + 1) * h * w].reshape(2, h, w, d).permute(0, 3, 1, 2)
        assert torch.equal(maps[:, group * d:(group + 1) * d], grid_tokens)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_prune_intermediate_layers_keeps_the_intermediates_it_names(name):
    full = build(name, num_classes=4).eval()
    pruned = copy.deepcopy(full)
    assert pruned.prune_intermediate_layers([0, 1]) == [0, 1]
    x = images(full, 2)
    with torch.no_grad():
        kept = pruned.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        wanted = full.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(kept, wanted)) and len(kept) == 2
    assert pruned.num_classes == 0 and isinstance(pruned.get_classifier(), torch.nn.Identity)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in full.parameters())


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_grad_checkpointing_keeps_outputs_and_gradients(name):
    plain = build(name, num_classes=3)
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    x = images(plain, 2)
    with torch.no_grad():
        assert torch.equal(ckpt.eval()(x), plain.eval()(x))
        _, a = ckpt.forward_intermediates(x)
        _, b = plain.forward_intermediates(x)
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    for m in (plain, ckpt):
        m.train()(x).square().mean().backward()
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.filterwarnings(JIT_DEPRECATED)
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_torchscript_matches_eager_and_saves(name):
    with timm.set_scriptable(True):
        model = build(name, num_classes=3).eval()
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)  # a script that calls back into Python could not be saved
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = images(model, 1)
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(scripted(x), want)
        torch.testing.assert_close(loaded(x), want)


@pytest.mark.parametrize("grid, dim", [((4, 4), 48), ((12, 12), 768), ((3, 7), 96), ((1, 1), 4)])
def test_grouped_vit_scriptable_position_table_is_pos_embed_sincos_2d_bit_for_bit(grid, dim):
    # stored checkpoints embed exactly as before the model became scriptable
    assert torch.equal(sincos_2d_table(*grid, dim), sincos_2d(grid, dim))


@pytest.mark.filterwarnings(JIT_DEPRECATED)
def test_scripted_grouped_vit_keeps_its_input_checks():
    scripted = torch.jit.script(build("grouped_vit_base_patch8_96").eval())
    with pytest.raises(torch.jit.Error, match="a 36x32 image does not split into 8-px patches"):
        scripted(torch.randn(1, 10, 36, 32))
    with pytest.raises(torch.jit.Error, match=r"expected images \[B, 10, H, W\] .*got \(1, 6, 32, 32\)"):
        scripted(torch.randn(1, 6, 32, 32))


def fx_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model traced as timm traces (its leaf modules and functions), returning the final output."""
    tracer = {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions()}
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                     tracer_kwargs=tracer)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_fx_trace_matches_eager_and_trains(name):
    model = build(name, num_classes=7).eval()
    x = images(model, 2)
    traced = fx_model(model)
    with torch.no_grad():
        [out] = traced(x).values()
        assert torch.equal(out, model(x))
    traced.train()
    [out] = traced(x).values()
    out.mean().backward()
    assert out.shape == (2, 7)
    missing = [n for n, p in traced.named_parameters() if p.grad is None]
    assert not missing, f"no gradient through the traced model for {missing}"


@pytest.mark.filterwarnings(JIT_DEPRECATED)
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_fx_traced_model_scripts(name):
    with timm.set_scriptable(True):
        model = build(name, num_classes=3).eval()
    scripted = torch.jit.script(fx_model(model))  # the traced code carries forward()'s annotations
    x = images(model, 1)
    with torch.no_grad():
        [out] = scripted(x).values()
        torch.testing.assert_close(out, model(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_registered_sizes_build_and_run_at_their_cfg(name):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    cfg, x = model.pretrained_cfg, images(model, 1)
    assert model.num_classes == cfg["num_classes"]
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    assert feats.shape[feature_axis(model)] == model.num_features
    grid = [side // model.feature_info[-1]["reduction"] for side in x.shape[-2:]]
    if feature_axis(model) == 1:
        assert list(feats.shape[-2:]) == grid == list(cfg["pool_size"])
    else:  # tokens: a whole number of patch grids (a grouped ViT has one per band group)
        assert feats.shape[1] % math.prod(grid) == 0
    assert out.shape == (1, model.num_features if not cfg["num_classes"] else cfg["num_classes"])
    assert torch.isfinite(out).all()
