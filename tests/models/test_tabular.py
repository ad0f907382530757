"""The feature tokenizer on mixed column types, against per-column loops, and the table transformer's
timm contract (registry, spec round trip, pooling, input checks)."""

import pytest
import torch

from ssl_platform.data.collate import TransformedDataset, collate
from ssl_platform.data.datasets import Table
from ssl_platform.models.backbones import create_backbone, from_spec, spec
from ssl_platform.models.tabular import FeatureTokenizer


def test_tokens_match_a_per_column_loop_on_mixed_types():
    torch.manual_seed(0)
    tok = FeatureTokenizer(num_numeric=3, cat_cardinalities=[4, 2], dim=5, num_reg_tokens=2)
    x_num = torch.randn(6, 3)
    x_cat = torch.stack([torch.randint(0, 4, (6,)), torch.randint(0, 2, (6,))], dim=1)
    out = tok(x_num, x_cat)
    assert out.shape == (6, 2 + 3 + 2, 5)
    for b in range(6):
        for r in range(2):
            assert torch.equal(out[b, r], tok.reg_tokens[r])  # no bias, the same for every row
        for j in range(3):
            assert torch.allclose(out[b, 2 + j], x_num[b, j] * tok.num_weight[j] + tok.num_bias[j])
        offset = 0
        for j, card in enumerate([4, 2]):
            row = tok.cat_embed.weight[offset + x_cat[b, j]] + tok.cat_bias[j]
            assert torch.allclose(out[b, 5 + j], row)
            offset += card


def test_the_same_code_in_two_columns_gets_two_embeddings():
    tok = FeatureTokenizer(0, [3, 3], dim=4, num_reg_tokens=1)
    with torch.no_grad():
        tok.cat_bias.zero_()
    out = tok(torch.zeros(1, 0), torch.tensor([[1, 1]]))
    assert not torch.allclose(out[0, 1], out[0, 2])


def test_real_mixed_table_through_the_transformer():
    table = Table("fair", split="train", limit=40)
    batch = collate([TransformedDataset(table)[i] for i in range(8)])
    assert batch["x_num"].dtype == torch.float32 and batch["x_cat"].dtype == torch.int64
    model = create_backbone("tabular_transformer", **table.schema(), dim=16, depth=2, num_heads=2, num_reg_tokens=2)
    tokens = model.forward_features(batch["x_num"], batch["x_cat"])
    assert tokens.shape == (8, 2 + 4 + 4, 16)
    assert model.forward_head(tokens, pre_logits=True).shape == (8, 160) == (8, model.num_features)
    keep = torch.tensor([[0, 1, 3, 7]] * 8)
    assert model.forward_features(batch["x_num"], batch["x_cat"], keep=keep).shape == (8, 4, 16)


def test_spec_round_trip_pooling_and_classifier():
    torch.manual_seed(0)
    m = create_backbone("tabular_transformer", num_numeric=2, cat_cardinalities=[3], dim=8, depth=1, pool="mean")
    assert m.num_features == 8
    again = from_spec(spec(m))
    again.load_state_dict(m.state_dict())  # strict
    x, c = torch.randn(4, 2), torch.tensor([[0], [1], [2], [1]])
    m.eval(), again.eval()
    assert torch.allclose(m.forward_head(m.forward_features(x, c), pre_logits=True),
                          m.forward_features(x, c).mean(1))
    assert torch.allclose(m(x, c), again(x, c))
    m.reset_classifier(5)
    assert m(x, c).shape == (4, 5)


def test_bad_inputs_fail_clearly():
    m = create_backbone("tabular_transformer", num_numeric=2, cat_cardinalities=[3], dim=8, depth=1)
    with pytest.raises(ValueError, match="built for 2 numeric and 1 categorical"):
        m.forward_features(torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        m.forward_features(torch.randn(4, 2), torch.full((4, 1), 3))
    with pytest.raises(ValueError, match="at least one column"):
        FeatureTokenizer(0, [], dim=4)
    with pytest.raises(ValueError, match="pool must be"):
        create_backbone("tabular_transformer", num_numeric=2, pool="max")
