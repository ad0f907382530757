"""plain_convnet: registered with timm, keeps the backbone contract, round-trips through our export."""

from __future__ import annotations

import timm
import torch

from ssl_platform.checkpoint.io import export_backbone, load_backbone
from ssl_platform.models.backbones import create_backbone, pooled_features, spec


def test_timm_builds_it_by_name_with_the_backbone_contract():
    model = timm.create_model("plain_convnet", num_classes=0, in_chans=1, channels=(8, 16, 32))
    x = torch.randn(3, 1, 28, 28)
    assert model.forward_features(x).shape == (3, 32, 3, 3)  # 28 -> 14 -> 7 -> 3
    assert model.num_features == 32
    assert torch.equal(model(x), model.forward_head(model.forward_features(x), pre_logits=True))
    model.reset_classifier(5)
    assert model(x).shape == (3, 5) and model.get_classifier().out_features == 5


def test_export_loads_back_into_our_loader_and_into_plain_timm(tmp_path):
    torch.manual_seed(0)
    backbone = create_backbone("plain_convnet", in_chans=1, channels=[8, 16])
    assert spec(backbone) == {"name": "plain_convnet", "small_input": False, "in_chans": 1, "channels": [8, 16]}
    path = tmp_path / "backbone.safetensors"
    export_backbone(backbone, path)
    x = torch.randn(2, 1, 16, 16)
    backbone.eval()
    ours = load_backbone(path).eval()
    assert torch.equal(pooled_features(ours, x), pooled_features(backbone, x))
    plain = timm.create_model("plain_convnet", pretrained=True, num_classes=0, in_chans=1, channels=(8, 16),
                              pretrained_cfg_overlay={"file": str(path)}).eval()
    assert torch.equal(plain(x), pooled_features(backbone, x))
