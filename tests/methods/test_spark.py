"""SparK (methods/spark.py): mask counts, shapes, the loss over hidden patches only, mask tokens,
input-size errors, and an export that loads into plain timm and into the eval harness."""

import pytest
import timm
import torch

from ssl_platform.losses.reconstruction import normalize_patches, patchify, unpatchify
from ssl_platform.methods.spark import SparK


def _spark(**kwargs) -> SparK:
    torch.manual_seed(0)
    args = {"backbone": "resnet18", "in_chans": 3, "image_size": 64, "decoder_width": 64}
    return SparK(**{**args, **kwargs})


def test_grid_is_input_over_total_stride_with_the_exact_visible_count():
    model = _spark(image_size=224, decoder_width=32)
    grid = model.visible_grid(16, 224, 224, torch.device("cpu"))
    assert model.stride == 32 and grid.shape == (16, 1, 7, 7)
    assert (grid.flatten(1).sum(1) == 20).all()  # 20 of 49, the paper's count


def test_stage_shapes_and_reconstruction_shape():
    model = _spark(image_size=224, decoder_width=32)
    x = torch.randn(2, 3, 224, 224)
    feats = model.sparse_features(x, model.visible_grid(2, 224, 224, x.device))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 56, 56), (2, 128, 28, 28), (2, 256, 14, 14), (2, 512, 7, 7)]
    assert model.reconstruct(x, model.visible_grid(2, 224, 224, x.device)).shape == x.shape


@pytest.mark.parametrize("in_chans", [1, 3])
def test_one_and_three_channel_inputs_train(in_chans):
    model = _spark(in_chans=in_chans)
    out = model({"image": torch.randn(4, in_chans, 64, 64)})
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert model.to_pixels.out_channels == in_chans


def test_the_loss_counts_hidden_patches_only(monkeypatch):
    model = _spark()
    x = torch.randn(3, 3, 64, 64)
    grid = model.visible_grid(3, 64, 64, x.device)
    monkeypatch.setattr(model, "visible_grid", lambda *a: grid)
    target = unpatchify(normalize_patches(patchify(x, 32)), 32, (2, 2), 3)
    visible = grid.repeat_interleave(32, 2).repeat_interleave(32, 3)
    # a "reconstruction" that is perfect where hidden and garbage where the encoder saw the input
    monkeypatch.setattr(model, "reconstruct", lambda x, g: torch.where(visible, torch.full_like(x, 1e3), target))
    assert model({"image": x})["loss"].item() == pytest.approx(0.0, abs=1e-8)
    monkeypatch.setattr(model, "reconstruct", lambda x, g: torch.where(visible, target, target + 1.0))
    assert model({"image": x})["loss"].item() == pytest.approx(1.0, rel=1e-5)


def test_gradients_reach_every_scale_s_mask_token_which_escapes_weight_decay():
    model = _spark()
    x = torch.randn(4, 3, 64, 64)
    model({"image": x})["loss"].backward()
    assert len(model.mask_tokens) == 4
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in model.mask_tokens)
    assert model.no_weight_decay() == {"mask_tokens.0", "mask_tokens.1", "mask_tokens.2", "mask_tokens.3"}


@pytest.mark.parametrize("backbone", ["resnet18", "convnext_atto"])
def test_the_loss_ignores_hidden_pixels_of_the_encoder_input(monkeypatch, backbone):
    """In training mode (batch statistics, drop path off), the loss depends on a hidden pixel only as a
    target: its gradient through the encoder's input is exactly 0, and non-zero at visible pixels."""
    model = _spark(backbone=backbone).train()
    x = torch.randn(3, 3, 64, 64)
    grid = model.visible_grid(3, 64, 64, x.device)
    monkeypatch.setattr(model, "visible_grid", lambda *a: grid)
    seen = x.clone().requires_grad_(True)  # what the encoder gets; the batch's x stays the target
    reconstruct = model.reconstruct
    monkeypatch.setattr(model, "reconstruct", lambda x, g: reconstruct(seen, g))
    model({"image": x})["loss"].backward()
    hidden = ~grid.repeat_interleave(32, 2).repeat_interleave(32, 3).expand_as(x)
    assert torch.count_nonzero(seen.grad[hidden]) == 0
    assert torch.count_nonzero(seen.grad[~hidden]) > 0.9 * (~hidden).sum()


def test_hidden_pixels_do_not_change_the_reconstruction():
    model = _spark().eval()
    x = torch.randn(2, 3, 64, 64)
    grid = model.visible_grid(2, 64, 64, x.device)
    hidden = ~grid.repeat_interleave(32, 2).repeat_interleave(32, 3)
    edited = torch.where(hidden, torch.randn_like(x) * 5, x)
    torch.testing.assert_close(model.reconstruct(x, grid), model.reconstruct(edited, grid), rtol=0, atol=0)


def test_input_sizes_that_the_total_stride_does_not_divide_are_refused():
    with pytest.raises(ValueError, match="image_size 48 is not a multiple of the encoder's total stride 32; use 64"):
        _spark(image_size=48)
    model = _spark()
    with pytest.raises(ValueError, match="input 72x64 is not divisible by the encoder's total stride 32"):
        model({"image": torch.randn(2, 3, 72, 64)})
    with pytest.raises(ValueError, match="keeps 0 visible"):
        _spark(image_size=32)  # a 1x1 grid cannot hide anything and show anything


def test_small_input_stem_feeds_a_full_resolution_stage():
    model = _spark(small_input=True, in_chans=1, image_size=24, backbone_kwargs={"channels": [8, 16, 32, 64]})
    assert model.stride == 8 and model.levels == [0, 1, 2, 3]  # stages at strides 8, 4, 2 and 1
    out = model({"image": torch.randn(2, 1, 24, 24)})
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("name,head", [("resnet18", {"fc.weight", "fc.bias"}),
                                       ("convnext_atto", {"head.fc.weight", "head.fc.bias"})])
def test_the_trained_encoder_loads_into_plain_timm_with_only_the_classifier_missing(name, head):
    model = _spark(backbone=name, in_chans=1)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model({"image": torch.randn(4, 1, 64, 64)})["loss"].backward()
    opt.step()
    plain = timm.create_model(name, in_chans=1, num_classes=10)
    result = plain.load_state_dict(model.backbone.state_dict(), strict=False)
    assert set(result.missing_keys) == head and not result.unexpected_keys
    sd = plain.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in model.backbone.state_dict().items())


def test_convnext_head_norm_is_frozen_and_densify_uses_layernorm():
    model = _spark(backbone="convnext_atto")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"backbone.head.norm.weight", "backbone.head.norm.bias"}
    assert all(type(n).__name__ == "LayerNorm2d" for n in model.densify_norms)
    assert all(type(n).__name__ == "SparseBatchNorm2d" for n in _spark().densify_norms)


def test_embed_is_the_dense_pooled_feature():
    model = _spark().eval()
    x = torch.randn(2, 3, 64, 64)
    expected = model.backbone.forward_head(model.backbone.forward_features(x), pre_logits=True)
    torch.testing.assert_close(model.embed({"image": x}), expected)
    assert model.embed({"image": x}).shape == (2, 512)
