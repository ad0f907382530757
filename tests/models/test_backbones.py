"""Backbones: the small-input stem's spatial sizes, widths, specs that rebuild the architecture."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ssl_platform.models.backbones import create_backbone, from_spec, pooled_features, spec

NARROW = [8, 16, 32, 64]  # a quarter-width ResNet-18: same topology, fast on CPU
# ViTs get depth=2 (a timm kwarg like any other): same code paths, a fraction of the init time


def stem(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The ResNet stem alone: conv1 -> bn1 -> act1 -> maxpool."""
    return model.maxpool(model.act1(model.bn1(model.conv1(x))))


@pytest.mark.parametrize("size", [28, 32])
def test_small_input_stem_keeps_full_resolution(size):
    small = create_backbone("resnet18", small_input=True, in_chans=1, channels=NARROW).eval()
    plain = create_backbone("resnet18", small_input=False, in_chans=1, channels=NARROW).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        assert stem(small, x).shape[-2:] == (size, size)
        # the ImageNet stem (7x7 stride 2 + max-pool) divides by 4: 28 -> 7, 32 -> 8
        assert stem(plain, x).shape[-2:] == (size // 4, size // 4)
        # after the stem, layers 2-4 halve the map each (ceil): 28 -> 14 -> 7 -> 4, 32 -> 16 -> 8 -> 4
        assert small(x).ndim == 2  # num_classes=0: forward gives pooled features
        assert small.forward_features(x).shape[-2:] == (4, 4)
        # plain stem: 7 -> 4 -> 2 -> 1 and 8 -> 4 -> 2 -> 1, a single position left at the end
        assert plain.forward_features(x).shape[-2:] == (1, 1)


def test_small_input_stem_is_3x3_stride1_without_maxpool():
    model = create_backbone("resnet18", small_input=True, in_chans=1)
    assert isinstance(model.conv1, nn.Conv2d)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.padding == (1, 1)
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 64
    assert model.conv1.bias is None  # followed by BatchNorm
    assert isinstance(model.maxpool, nn.Identity)


def test_stem_stride_2_halves_every_stage():
    model = create_backbone("resnet18", small_input=True, stem_stride=2, in_chans=1, channels=NARROW).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert stem(model, x).shape[-2:] == (14, 14)
        assert model.forward_features(x).shape[-2:] == (2, 2)  # 14 -> 7 -> 4 -> 2
    assert spec(model)["stem_stride"] == 2


def test_stem_stride_without_small_input_is_refused():
    with pytest.raises(ValueError, match="small_input=True"):
        create_backbone("resnet18", stem_stride=2)


def test_resnet18_has_512_features_and_no_classifier():
    model = create_backbone("resnet18", small_input=True).eval()
    assert model.num_features == 512
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 512)  # num_classes=0: forward stops at the pooled features


def test_single_channel_input():
    model = create_backbone("resnet18", small_input=True, in_chans=1, channels=NARROW).eval()
    assert model.conv1.weight.shape[1] == 1
    with torch.no_grad():
        assert pooled_features(model, torch.randn(3, 1, 28, 28)).shape == (3, 64)
    with pytest.raises(RuntimeError):
        model(torch.randn(3, 3, 28, 28))  # a 3-channel image does not fit a 1-channel stem


def test_channels_kwarg_sets_width():
    model = create_backbone("resnet18", channels=[32, 64, 128, 256])
    assert model.num_features == 256
    assert model.layer4[-1].conv2.out_channels == 256
    assert model.layer1[0].conv1.out_channels == 32


def test_unknown_name_says_so_and_points_to_timm():
    with pytest.raises(ValueError) as info:
        create_backbone("resnet_does_not_exist")
    message = str(info.value)
    assert "'resnet_does_not_exist'" in message
    assert "unknown timm backbone" in message
    assert "timm.list_models" in message
    assert "resnet" in message.split("similar names:")[1]  # suggestions share the name's prefix


def test_small_input_on_vit_points_to_img_size_and_patch_size():
    with pytest.raises(ValueError) as info:
        create_backbone("vit_tiny_patch16_224", small_input=True, depth=1)
    message = str(info.value)
    assert "vit_tiny_patch16_224" in message
    assert "img_size" in message and "patch_size" in message


def test_vit_takes_img_size_and_patch_size():
    model = create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, in_chans=1, depth=2).eval()
    assert model.patch_embed.num_patches == 16
    with torch.no_grad():
        assert pooled_features(model, torch.randn(2, 1, 32, 32)).shape == (2, model.num_features)


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("resnet18", {"small_input": True, "in_chans": 1, "channels": NARROW}),
        ("resnet18", {"small_input": True, "stem_stride": 2, "in_chans": 1, "channels": NARROW}),
        ("resnet18", {"in_chans": 3, "channels": NARROW}),
        ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "in_chans": 1, "depth": 2}),
    ],
)
def test_spec_round_trip_rebuilds_same_architecture(name, kwargs):
    original = create_backbone(name, **kwargs)
    backbone_spec = spec(original)
    assert backbone_spec["name"] == name
    # the spec travels as JSON in the safetensors metadata: it must survive that trip too
    rebuilt = from_spec(json.loads(json.dumps(backbone_spec)))
    assert state_shapes(rebuilt) == state_shapes(original)
    assert spec(rebuilt) == json.loads(json.dumps(backbone_spec))
    if kwargs.get("small_input"):
        assert rebuilt.conv1.stride == original.conv1.stride and isinstance(rebuilt.maxpool, nn.Identity)
    # a fresh random init, not a copy of the weights
    assert any(not torch.equal(a, b) for a, b in zip(original.parameters(), rebuilt.parameters()))


def test_spec_of_foreign_module_is_empty_and_a_copy():
    assert spec(nn.Linear(2, 2)) == {}
    model = create_backbone("resnet18", channels=NARROW)
    spec(model)["name"] = "changed"
    assert spec(model)["name"] == "resnet18"


@pytest.mark.parametrize(
    "name, kwargs, x_shape",
    [
        ("resnet18", {"small_input": True, "in_chans": 1, "channels": NARROW}, (5, 1, 28, 28)),
        ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2}, (5, 3, 32, 32)),
    ],
)
def test_pooled_features_shape(name, kwargs, x_shape):
    model = create_backbone(name, **kwargs).eval()
    with torch.no_grad():
        feats = pooled_features(model, torch.randn(*x_shape))
    assert feats.shape == (x_shape[0], model.num_features)
    assert torch.isfinite(feats).all()


def test_pooled_features_of_resnet_is_global_average_of_the_map():
    model = create_backbone("resnet18", small_input=True, in_chans=1, channels=NARROW).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = model.forward_features(x).mean(dim=(2, 3))
        torch.testing.assert_close(pooled_features(model, x), expected)
