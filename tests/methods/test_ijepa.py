"""I-JEPA: the context encoder sees context patches only, targets are layer-normalised EMA tokens,
blocks are predicted independently, the EMA target gets no gradient and follows the schedule, and
the export is a plain timm ViT."""

import pytest
import timm
import torch
import torch.nn.functional as F

from ssl_platform.engine.ema import linear_momentum
from ssl_platform.masking.block import multiblock_masks
from ssl_platform.methods import METHODS
from ssl_platform.methods.ijepa import IJEPA
from ssl_platform.models.backbones import from_spec, spec


def tiny(**kw):
    torch.manual_seed(0)
    args = {"backbone": "vit_tiny_patch16_224", "in_chans": 1, "image_size": 32,
            "backbone_kwargs": {"patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 2},
            "predictor_dim": 32, "predictor_depth": 2, "predictor_heads": 2}
    return IJEPA(**{**args, **kw})


def test_registered_and_shapes():
    assert METHODS["ijepa"] is IJEPA
    m = tiny()
    x = torch.randn(6, 1, 32, 32)
    ctx, tgt = multiblock_masks(6, m.grid, generator=torch.Generator().manual_seed(0))
    pred = m.predictor(m.encode(m.context_encoder, x, ctx), ctx, tgt)
    assert pred.shape == (4 * 6, tgt.shape[2], 64)  # (B*4, Nt, D)
    out = m({"image": x})
    assert out["loss"].ndim == 0 and out["loss"] > 0 and out["target_patches"] == out["target_patches"].round()
    assert m.embed({"image": x}).shape == (6, 64)


def test_context_tokens_do_not_depend_on_hidden_patches():
    m = tiny().eval()
    x = torch.randn(2, 1, 32, 32)
    keep = torch.tensor([[0, 1, 2, 9, 10, 11, 18, 19, 20, 27], [5, 6, 7, 13, 14, 15, 22, 23, 30, 31]])
    y = x.clone()
    visible = torch.zeros(2, 64, dtype=torch.bool)
    visible.scatter_(1, keep, True)
    # scramble every pixel of the patches outside `keep`
    pix = visible.view(2, 1, 8, 8).repeat_interleave(4, 2).repeat_interleave(4, 3)
    y[~pix] = torch.randn(int((~pix).sum()))
    a, b = m.encode(m.context_encoder, x, keep), m.encode(m.context_encoder, y, keep)
    assert a.shape == (2, 10, 64) and torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(m.encode(m.context_encoder, x), m.encode(m.context_encoder, y))


def test_targets_are_parameter_free_layer_norm_of_the_full_image_tokens():
    m = tiny()
    x = torch.randn(3, 1, 32, 32)
    torch.manual_seed(1)
    ctx, tgt = multiblock_masks(3, m.grid)
    h = m.encode(m.backbone, x)  # the full image through the target encoder
    mu, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
    naive = (h - mu) / torch.sqrt(var + 1e-5)
    expected = torch.cat([torch.stack([naive[b, tgt[j, b]] for b in range(3)]) for j in range(4)])
    pred = m.predictor(m.encode(m.context_encoder, x, ctx), ctx, tgt)
    torch.manual_seed(1)  # the same masks inside forward
    loss = m({"image": x})["loss"]
    assert torch.allclose(loss, F.smooth_l1_loss(pred, expected), atol=1e-6)
    assert torch.allclose(expected.mean(-1), torch.zeros(()), atol=1e-5)


def test_each_target_block_is_predicted_without_seeing_the_others():
    m = tiny().eval()
    x = torch.randn(2, 1, 32, 32)
    ctx, tgt = multiblock_masks(2, m.grid, generator=torch.Generator().manual_seed(4))
    tokens = m.encode(m.context_encoder, x, ctx)
    joint = m.predictor(tokens, ctx, tgt)
    for j in range(4):
        alone = m.predictor(tokens, ctx, tgt[j:j + 1])
        assert torch.allclose(joint[j * 2:(j + 1) * 2], alone, atol=1e-5)


def test_target_encoder_gets_no_gradient_and_moves_by_the_schedule():
    m = tiny(momentum=(0.9, 1.0))
    m({"image": torch.randn(4, 1, 32, 32)})["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in m.backbone.parameters())
    assert all(p.grad is not None for p in m.predictor.parameters() if p.requires_grad)
    assert m.context_encoder.blocks[0].attn.qkv.weight.grad is not None
    assert not m.context_encoder.pos_embed.requires_grad  # fixed sin-cos, identical in both encoders
    with torch.no_grad():
        for p in m.context_encoder.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    online = dict(m.context_encoder.state_dict())
    m.on_step_end(0.25)
    mom = linear_momentum(0.25, 0.9, 1.0)
    assert mom == pytest.approx(0.925)
    for k, v in m.backbone.state_dict().items():
        assert torch.allclose(v, mom * before[k] + (1 - mom) * online[k], atol=1e-6), k
    still = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    m.on_step_end(1.0)  # momentum 1: the target no longer moves
    assert all(torch.equal(v, still[k]) for k, v in m.backbone.state_dict().items())


def test_export_is_the_target_encoder_and_loads_into_plain_timm():
    m = tiny()
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(0.1)
    s = spec(m.backbone)
    assert s["class_token"] is False and s["global_pool"] == "avg" and s["img_size"] == 32
    kwargs = {k: v for k, v in s.items() if k not in ("name", "small_input", "in_chans")}
    plain = timm.create_model(s["name"], num_classes=0, in_chans=1, **kwargs)
    plain.load_state_dict(m.backbone.state_dict())  # strict: same names, nothing missing
    rebuilt = from_spec(s)
    rebuilt.load_state_dict(m.backbone.state_dict())
    x = torch.randn(5, 1, 32, 32)
    feats = m.embed({"image": x})
    assert torch.allclose(feats, plain.eval()(x), atol=1e-5)
    # average-pooled tokens of the target encoder
    assert torch.allclose(feats, m.encode(m.backbone, x).mean(1), atol=1e-5)
    assert feats.std(0).mean() > 1e-3


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="VisionTransformer"):
        IJEPA("resnet18", in_chans=1, image_size=32)
    with pytest.raises(ValueError, match="loss must be"):
        tiny(loss="l1")
    with pytest.raises(ValueError, match="min_keep"):
        tiny(min_keep=60)
    with pytest.raises(ValueError, match="set method.image_size"):
        tiny()({"image": torch.randn(2, 1, 28, 28)})
    with pytest.raises(ValueError, match="divisible by its 3 heads"):
        tiny(predictor_heads=3)


def test_official_collator_reaches_the_masks_and_refuses_grids_it_would_hang_on():
    # 8x8 grid: the official targets are 3x3 to 4x3, so min_keep must stay below 9
    with pytest.raises(ValueError, match="target block of 3x3 patches on a 8x8 grid never exceeds min_keep=10"):
        tiny(official_collator=True)
    m = tiny(official_collator=True, min_keep=4)
    torch.manual_seed(3)
    out = m({"image": torch.randn(4, 1, 32, 32)})
    torch.manual_seed(3)  # the same draws the forward pass made
    ctx, tgt = multiblock_masks(4, m.grid, min_keep=4, official_collator=True)
    assert out["context_patches"] == ctx.shape[1] and out["target_patches"] == tgt.shape[2]
    # official placement: nothing on the last row or column of the 8x8 grid
    assert not any(int(i) // 8 == 7 or int(i) % 8 == 7 for i in torch.cat([ctx.flatten(), tgt.flatten()]))
    # on 7x7 (28 px, patch 4) the official targets are 2x3, 3x3, 4x2 or 4x3: most never exceed min_keep=10
    with pytest.raises(ValueError, match="never exceeds min_keep=10"):
        tiny(official_collator=True, image_size=28)
    assert tiny(official_collator=True, image_size=28, min_keep=5).mask_kwargs["official_collator"] is True
