"""A transformer over table rows, one token per column (FT-Transformer style), for T-JEPA.

Gorishniy et al., "Revisiting Deep Learning Models for Tabular Data", NeurIPS 2021 (the feature
tokenizer); Thimonier et al., "T-JEPA", ICLR 2025 (regularization tokens, the flattened output).

Registered with timm as `tabular_transformer`, so `create_backbone("tabular_transformer",
num_numeric=..., cat_cardinalities=[...])` builds it and an exported file loads back by its spec. It
keeps timm's contract with two inputs instead of one image:
`forward_features(x_num, x_cat) -> [B, R + D, dim]` tokens and `forward_head(tokens, pre_logits=True)
-> [B, num_features]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn


class FeatureTokenizer(nn.Module):
    """One token per column plus `num_reg_tokens` learned regularization tokens in front.

    Numeric column j becomes `x_j * W_j + b_j`; categorical column j becomes `E_j[code] + b_j`
    (code 0 is "unknown", as `data.datasets.Table` encodes it). A regularization token is a learned
    vector with no bias. The per-column weights and biases already tell the columns apart, so no
    position embedding is added (as in FT-Transformer; the official T-JEPA also adds a sin-cos one).

    Args:
        num_numeric: numeric columns.
        cat_cardinalities: codes per categorical column (including the unknown code 0).
        dim: token width.
        num_reg_tokens: regularization tokens (T-JEPA: they keep training from collapsing).
    """

    def __init__(self, num_numeric: int, cat_cardinalities: Sequence[int], dim: int, num_reg_tokens: int = 1):
        super().__init__()
        if num_numeric < 0 or any(c < 1 for c in cat_cardinalities) or num_numeric + len(cat_cardinalities) == 0:
            raise ValueError(
                f"a table needs at least one column and positive cardinalities; got num_numeric={num_numeric}, "
                f"cat_cardinalities={list(cat_cardinalities)} (Table.schema() gives both)"
            )
        self.num_numeric, self.cat_cardinalities = num_numeric, list(cat_cardinalities)
        self.num_reg_tokens = num_reg_tokens
        self.num_weight = nn.Parameter(torch.empty(num_numeric, dim))
        self.num_bias = nn.Parameter(torch.empty(num_numeric, dim))
        offsets = torch.tensor([0, *self.cat_cardinalities[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("cat_offsets", offsets[: len(self.cat_cardinalities)], persistent=False)
        self.cat_embed = nn.Embedding(max(sum(self.cat_cardinalities), 1), dim)
        self.cat_bias = nn.Parameter(torch.empty(len(self.cat_cardinalities), dim))
        self.reg_tokens = nn.Parameter(torch.empty(num_reg_tokens, dim))
        bound = dim ** -0.5  # FT-Transformer's uniform init
        for p in (self.num_weight, self.num_bias, self.cat_bias, self.reg_tokens, self.cat_embed.weight):
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None) -> torch.Tensor:
        """`x_num: [B, num_numeric]` float, `x_cat: [B, n_cat]` int64 -> `[B, R + num_numeric + n_cat, dim]`."""
        b = x_num.shape[0]
        n_cat = len(self.cat_cardinalities)
        if x_num.shape[1] != self.num_numeric or (x_cat.shape[1] if x_cat is not None else 0) != n_cat:
            raise ValueError(
                f"this model was built for {self.num_numeric} numeric and {n_cat} categorical columns, got "
                f"x_num {tuple(x_num.shape)} and x_cat {None if x_cat is None else tuple(x_cat.shape)}; "
                "build it from the same table's schema()"
            )
        tokens = [self.reg_tokens.expand(b, -1, -1), x_num.unsqueeze(-1) * self.num_weight + self.num_bias]
        if n_cat:
            too_big = x_cat >= torch.tensor(self.cat_cardinalities, device=x_cat.device)
            if too_big.any() or (x_cat < 0).any():
                raise ValueError(f"categorical codes out of range for cardinalities {self.cat_cardinalities}")
            tokens.append(self.cat_embed(x_cat + self.cat_offsets) + self.cat_bias)
        return torch.cat(tokens, dim=1)


class TabularTransformer(nn.Module):
    """Feature tokenizer + post-norm transformer encoder + final LayerNorm.

    Args:
        num_numeric, cat_cardinalities, num_reg_tokens: the tokenizer (`FeatureTokenizer`).
        dim: token width H (T-JEPA on Jannis: 64).
        depth: encoder layers.
        num_heads: attention heads.
        ffn_dim: feed-forward width (default `2 * dim`).
        dropout: dropout inside the encoder layers.
        pool: the representation `forward_head` returns: "flatten" (the whole `(R + D) x H` sequence,
            T-JEPA's protocol) or "mean" (the average token).
        in_chans, num_classes: accepted for timm's factory; a table has no channels, and a classifier
            (`num_classes > 0`) is a linear layer on the pooled representation.
    """

    def __init__(
        self,
        num_numeric: int = 0,
        cat_cardinalities: Sequence[int] = (),
        dim: int = 64,
        depth: int = 4,
        num_heads: int = 2,
        ffn_dim: int | None = None,
        num_reg_tokens: int = 1,
        dropout: float = 0.0,
        pool: str = "flatten",
        in_chans: int = 1,
        num_classes: int = 0,
    ):
        super().__init__()
        if pool not in ("flatten", "mean"):
            raise ValueError(f"pool must be 'flatten' or 'mean', got {pool!r}")
        self.tokenizer = FeatureTokenizer(num_numeric, cat_cardinalities, dim, num_reg_tokens)
        layer = nn.TransformerEncoderLayer(dim, num_heads, ffn_dim or 2 * dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.pool, self.dim = pool, dim
        self.num_tokens = num_reg_tokens + num_numeric + len(cat_cardinalities)
        self.num_features = self.num_tokens * dim if pool == "flatten" else dim
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.apply(_init_linear)

    @property
    def num_reg_tokens(self) -> int:
        return self.tokenizer.num_reg_tokens

    def forward_features(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None,
                         keep: torch.Tensor | None = None) -> torch.Tensor:
        """`x_num: [B, n_num]`, `x_cat: [B, n_cat]` -> tokens `[B, R + D, dim]`, or `[B, K, dim]` for
        the token positions `keep: [B, K]` only (a JEPA context: the other columns are not in the
        sequence at all)."""
        tokens = self.tokenizer(x_num, x_cat)
        if keep is not None:
            tokens = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return self.norm(self.encoder(tokens))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """`[B, R + D, dim]` -> `[B, num_features]` (pre_logits) or logits."""
        x = x.flatten(1) if self.pool == "flatten" else x.mean(1)
        return x if pre_logits else self.head(x)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x_num, x_cat))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def no_weight_decay(self) -> set[str]:
        """Embeddings and biases of the tokenizer (FT-Transformer: no decay on them)."""
        return {"tokenizer.num_bias", "tokenizer.cat_bias", "tokenizer.reg_tokens", "tokenizer.cat_embed.weight"}


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


default_cfgs = generate_default_cfgs({
    # no hosted weights: our own trained files load with pretrained_cfg_overlay=dict(file=...)
    "tabular_transformer.untrained": {"num_classes": 0, "input_size": None, "pool_size": None, "mean": None,
                                      "std": None, "classifier": "head", "first_conv": None, "license": "apache-2.0"},
})


@register_model
def tabular_transformer(pretrained: bool = False, **kwargs) -> TabularTransformer:
    """A transformer over table columns; `num_numeric` and `cat_cardinalities` come from `Table.schema()`."""
    return build_model_with_cfg(TabularTransformer, "tabular_transformer", pretrained,
                                feature_cfg={"flatten_sequential": False}, **kwargs)
