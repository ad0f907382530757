"""The group-channel ViT: one token per (band group, patch), each group embedded from its own bands
only, fixed position ++ group encodings, band-group checks, and timm registration with exports that
load back by name."""

import pytest
import timm
import torch

from ssl_platform.models.backbones import create_backbone, from_spec, pooled_features, spec
from ssl_platform.models.grouped_vit import GroupedChannelViT, check_band_groups
from ssl_platform.models.pos_embed import sincos_1d, sincos_2d

GROUPS = [[0, 1, 2, 6], [3, 4, 5, 7], [8, 9]]


def tiny(**kw) -> GroupedChannelViT:
    torch.manual_seed(0)
    args = {"img_size": 32, "patch_size": 8, "in_chans": 10, "band_groups": GROUPS, "embed_dim": 64, "group_dim": 16,
            "depth": 2, "num_heads": 4}
    return GroupedChannelViT(**{**args, **kw})


def test_group_embedding_shapes():
    m = tiny()
    x = torch.rand(2, 10, 32, 32)
    assert m.tokens(x).shape == (2, 3, 16, 64)  # [B, G, L, D]: 4 x 4 patches per group
    assert m.forward_features(x).shape == (2, 48, 64)
    assert pooled_features(m, x).shape == (2, 64) and m.num_features == 64
    assert [e.proj.in_channels for e in m.patch_embeds] == [4, 4, 2]
    assert m.tokens(torch.rand(1, 10, 48, 16)).shape == (1, 3, 12, 64)  # other sizes: the grid follows


def test_each_group_is_embedded_from_its_own_bands_only():
    m = tiny()
    x = torch.rand(2, 10, 32, 32)
    y = x.clone()
    y[:, 5] += 1.0  # band 5 belongs to group 1
    changed = (m.tokens(x) - m.tokens(y)).abs().amax(dim=(0, 2, 3))  # per group
    assert changed[1] > 1e-3 and changed[0] == 0 and changed[2] == 0


def test_encodings_are_fixed_position_concat_group_codes():
    m = tiny()
    enc = m.encoding((4, 4))  # [G, L, D]
    for g in range(3):
        torch.testing.assert_close(enc[g, :, :48], sincos_2d((4, 4), 48))
        torch.testing.assert_close(enc[g, :, 48:], sincos_1d(3, 16)[g].expand(16, -1))
    assert not any("code" in n or "pos" in n for n, _ in m.named_parameters())
    # zero patch weights: the tokens are exactly the encodings (plus the projection bias)
    for e in m.patch_embeds:
        torch.nn.init.zeros_(e.proj.weight)
        torch.nn.init.zeros_(e.proj.bias)
    torch.testing.assert_close(m.tokens(torch.rand(1, 10, 32, 32))[0], enc)


def test_band_groups_must_cover_every_channel_once():
    assert check_band_groups(None, 3) == ((0, 1, 2),)
    for bad in ([[0, 1], [1, 2]], [[0, 1]], [[0, 1, 2, 3]], [[0, 1, 2], []]):
        with pytest.raises(ValueError, match="must split the 3 input channels 0..2"):
            check_band_groups(bad, 3)
    m = tiny()
    with pytest.raises(ValueError, match=r"expected images \[B, 10, H, W\].*got \(1, 6, 32, 32\)"):
        m.tokens(torch.rand(1, 6, 32, 32))
    with pytest.raises(ValueError, match="does not split into 8-px patches"):
        m.tokens(torch.rand(1, 10, 30, 32))


def test_timm_builds_it_by_name_and_an_export_loads_back():
    assert timm.is_model("grouped_vit") and timm.is_model("grouped_vit_large_patch8_96")
    large = timm.create_model("grouped_vit_large_patch8_96", depth=1)
    assert large.band_groups == ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9)) and large.group_dim == 256
    backbone = create_backbone("grouped_vit", in_chans=10, img_size=32, patch_size=8, band_groups=GROUPS, embed_dim=64,
                               depth=2, num_heads=4)
    fresh = from_spec(spec(backbone))  # what `random:RUN_DIR` and load_backbone rebuild
    fresh.load_state_dict(backbone.state_dict(), strict=True)
    x = torch.rand(2, 10, 32, 32)
    torch.testing.assert_close(pooled_features(fresh.eval(), x), pooled_features(backbone.eval(), x))
    assert not any("code" in k for k in backbone.state_dict())  # fixed codes are rebuilt, not stored


def test_the_registered_sentinel2_grouping_is_the_data_modules():
    from ssl_platform.data.datasets.multispectral import SENSORS
    from ssl_platform.models.grouped_vit import SENTINEL2_GROUPS

    bands = SENSORS["sentinel2"].bands
    assert SENSORS["sentinel2"].groups == SENTINEL2_GROUPS
    # SatMAE's groups: 10 m visible + NIR, 20 m red edge, 20 m SWIR
    assert [[bands[i] for i in g] for g in SENTINEL2_GROUPS] == [["B02", "B03", "B04", "B08"],
                                                                  ["B05", "B06", "B07", "B8A"], ["B11", "B12"]]
