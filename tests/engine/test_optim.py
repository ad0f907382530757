"""Parameter groups (no decay on biases, norms, position embeddings) and the lr scaling rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_platform.engine.optim import param_groups, scale_lr
from ssl_platform.methods import SimCLR
from ssl_platform.models.backbones import create_backbone


def groups_by_name(module: nn.Module) -> dict[str, set[str]]:
    """param_groups' output as {"decay"/"no_decay": {parameter names}}, checking wd_scale on the way."""
    names = {id(p): n for n, p in module.named_parameters()}
    out: dict[str, set[str]] = {}
    for group in param_groups(module):
        assert group["wd_scale"] == {"decay": 1.0, "no_decay": 0.0}[group["group"]]
        assert group["group"] not in out
        ids = [id(p) for p in group["params"]]
        assert len(ids) == len(set(ids)), "a parameter appears twice in one group"
        out[group["group"]] = {names[i] for i in ids}
    return out


def test_resnet_split_by_dimension():
    model = create_backbone("resnet18", small_input=True, in_chans=1, channels=[8, 16, 32, 64])
    groups = groups_by_name(model)
    params = dict(model.named_parameters())
    assert groups["no_decay"] == {n for n, p in params.items() if p.ndim < 2}
    assert groups["decay"] == {n for n, p in params.items() if p.ndim >= 2}
    assert "conv1.weight" in groups["decay"] and "bn1.weight" in groups["no_decay"]
    assert "layer2.0.downsample.1.bias" in groups["no_decay"]


def test_vit_pos_embed_and_cls_token_get_no_decay():
    model = SimCLR(create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2),
                   proj_hidden_dim=32, proj_dim=16)
    groups = groups_by_name(model)
    params = dict(model.named_parameters())
    # 3-d tensors that only timm's no_weight_decay() protects; the prefix must follow the nesting
    assert params["backbone.pos_embed"].ndim == 3 and params["backbone.cls_token"].ndim == 3
    assert {"backbone.pos_embed", "backbone.cls_token"} <= groups["no_decay"]
    low_dim = {n for n, p in params.items() if p.ndim < 2}
    assert groups["no_decay"] == low_dim | {"backbone.pos_embed", "backbone.cls_token"}
    # every conv / linear weight is decayed: patch embedding, attention, MLPs, projection head
    weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert weights == groups["decay"]
    assert "backbone.patch_embed.proj.weight" in weights and "projection.layers.0.weight" in weights


def test_every_trainable_parameter_exactly_once_and_frozen_skipped():
    model = create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)
    for p in model.blocks[0].parameters():
        p.requires_grad_(False)
    model.cls_token.requires_grad_(False)
    groups = param_groups(model)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(trainable)
    frozen = {id(p) for p in model.blocks[0].parameters()} | {id(model.cls_token)}
    assert not frozen & set(ids)


def test_param_groups_feed_an_optimizer():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    groups = param_groups(model)
    assert [g["group"] for g in groups] == ["decay", "no_decay"]
    opt = torch.optim.AdamW(groups, lr=0.1, weight_decay=0.5)
    assert len(opt.param_groups) == 2
    assert [len(g["params"]) for g in opt.param_groups] == [2, 4]


def test_empty_group_is_dropped():
    model = nn.Sequential(nn.Linear(3, 4, bias=False))
    assert [g["group"] for g in param_groups(model)] == ["decay"]
    model[0].weight.requires_grad_(False)
    assert param_groups(model) == []


@pytest.mark.parametrize(
    "rule, batch, expected",
    [
        ("linear", 256, 0.3), ("linear", 4096, 4.8), ("linear", 64, 0.075),
        ("sqrt", 256, 0.3), ("sqrt", 1024, 0.6), ("sqrt", 64, 0.15),
        ("none", 4096, 0.3), ("none", 64, 0.3),
    ],
)
def test_scale_lr_rules(rule, batch, expected):
    assert scale_lr(0.3, batch, rule) == pytest.approx(expected)


def test_scale_lr_defaults_to_linear():
    assert scale_lr(0.1, 512) == pytest.approx(0.2)


def test_simclr_paper_lr_rules_agree_at_4096():
    # SimCLR: 0.3 * B/256 (linear) equals 0.075 * sqrt(B) at B = 4096
    assert scale_lr(0.3, 4096, "linear") == pytest.approx(0.075 * math.sqrt(4096))
    assert scale_lr(0.075 * 16, 4096, "sqrt") == pytest.approx(0.075 * math.sqrt(4096))


def test_scale_lr_unknown_rule_names_the_choices():
    with pytest.raises(ValueError) as info:
        scale_lr(0.1, 256, "Linear")
    message = str(info.value)
    assert "'Linear'" in message
    assert "linear, sqrt, none" in message and "train.lr_scaling" in message
