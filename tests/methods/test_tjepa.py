"""T-JEPA: regularization tokens always in the context and never a target, the context encoder sees
context columns only, the loss against a per-set loop, the EMA target, the flattened embedding."""

import pytest
import torch
import torch.nn.functional as F

from ssl_platform.engine.ema import linear_momentum
from ssl_platform.masking.block import gather_tokens
from ssl_platform.methods import METHODS
from ssl_platform.methods.tjepa import TJEPA

SCHEMA = {"num_numeric": 5, "cat_cardinalities": [3, 4, 2]}


def tiny(**kw):
    torch.manual_seed(0)
    args = {"backbone_kwargs": {**SCHEMA, "dim": 16, "depth": 2, "num_heads": 2, "num_reg_tokens": 2},
            "predictor_dim": 8, "predictor_depth": 2, "predictor_heads": 2}
    return TJEPA(**{**args, **kw})


def rows(n=6):
    g = torch.Generator().manual_seed(1)
    x_cat = torch.stack([torch.randint(0, c, (n,), generator=g) for c in SCHEMA["cat_cardinalities"]], dim=1)
    return {"x_num": torch.randn(n, 5, generator=g), "x_cat": x_cat}


def test_registered_masks_keep_reg_tokens_in_the_context_only():
    assert METHODS["tjepa"] is TJEPA
    m = tiny()
    assert m.num_reg == 2 and m.num_columns == 8
    for seed in range(10):
        torch.manual_seed(seed)
        context, targets = m.masks(6, torch.device("cpu"))
        assert (context[:, :2] == torch.tensor([0, 1])).all()
        assert (context[:, 2:] >= 2).all() and (targets >= 2).all() and (targets < 10).all()
        for b in range(6):
            assert not set(context[b].tolist()) & set(targets[:, b].flatten().tolist())


def test_context_tokens_do_not_depend_on_other_columns():
    m = tiny().eval()
    batch = rows()
    keep = torch.tensor([[0, 1, 2, 4, 8]] * 6)  # reg tokens, numeric columns 0 and 2, categorical column 1
    other = {"x_num": batch["x_num"].clone(), "x_cat": batch["x_cat"].clone()}
    other["x_num"][:, [1, 3, 4]] += 5.0
    other["x_cat"][:, [0, 2]] = (other["x_cat"][:, [0, 2]] + 1) % torch.tensor([3, 2])
    a = m.context_encoder.forward_features(batch["x_num"], batch["x_cat"], keep=keep)
    b = m.context_encoder.forward_features(other["x_num"], other["x_cat"], keep=keep)
    assert torch.allclose(a, b, atol=1e-6)


def test_loss_is_the_mean_squared_error_over_every_target_set():
    m = tiny()
    batch = rows()
    torch.manual_seed(3)
    context, targets = m.masks(6, torch.device("cpu"))
    h = m.backbone.forward_features(batch["x_num"], batch["x_cat"])
    tokens = m.context_encoder.forward_features(batch["x_num"], batch["x_cat"], keep=context)
    per_set = []
    for j in range(targets.shape[0]):  # each set alone through the predictor
        pred = m.predictor(tokens, context, targets[j:j + 1])
        per_set.append(F.mse_loss(pred, gather_tokens(h, targets[j]), reduction="sum"))
    naive = sum(per_set) / (targets.numel() * 16)
    torch.manual_seed(3)  # the same masks inside forward
    out = m(batch)
    assert torch.allclose(out["loss"], naive, atol=1e-6)
    assert out["target_spread"] > 0


def test_target_encoder_gets_no_gradient_and_follows_the_schedule():
    m = tiny(momentum=(0.99, 1.0))
    m(rows())["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in m.backbone.parameters())
    assert all(p.grad is not None for p in m.context_encoder.encoder.parameters())
    with torch.no_grad():
        for p in m.context_encoder.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    online = m.context_encoder.state_dict()
    m.on_step_end(0.5)
    mom = linear_momentum(0.5, 0.99, 1.0)
    for k, v in m.backbone.state_dict().items():
        assert torch.allclose(v, mom * before[k] + (1 - mom) * online[k], atol=1e-6), k


def test_embed_flattens_the_target_encoders_whole_sequence():
    m = tiny().eval()
    batch = rows()
    e = m.embed(batch)
    assert e.shape == (6, (2 + 8) * 16)
    assert torch.equal(e, m.backbone.forward_features(batch["x_num"], batch["x_cat"]).flatten(1))


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="no room"):
        tiny(context_fraction=(0.9, 0.9), target_fraction=(0.9, 0.9))
    with pytest.raises(TypeError, match="table encoder"):
        TJEPA(backbone=torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="built for 5 numeric"):
        tiny()({"x_num": torch.randn(2, 4), "x_cat": torch.zeros(2, 3, dtype=torch.long)})
