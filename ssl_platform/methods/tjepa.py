"""T-JEPA: predict the representations of some columns of a table row from other columns.

Thimonier, De Melo Costa, Popineau, Rimmel, Doan. "T-JEPA: Augmentation-Free Self-Supervised
Learning for Tabular Data", ICLR 2025 (jose-melo/t-jepa).

Each row is one token per column plus learned regularization tokens (`models/tabular.py`). Per
batch a context size and a target size are drawn; per row a random context of columns and four
random target sets from the remaining columns (`masking.random.column_subsets`). The context encoder
sees the regularization tokens and the context columns only; an EMA copy, the target encoder, sees
the whole row, and the predictor must produce its tokens at each target set. Evaluation reads the
target encoder's whole token sequence, flattened (`[B, (R + D) * H]` with the encoder's default
`pool: flatten`): `Method.embed` of table rows, with `self.backbone` the target encoder.

Deviations from the official code (jose-melo/t-jepa@98dda99; docs/methods.md, T-JEPA section):
- the regularization tokens are always in the context and never a target (the released code samples
  them as if they were columns and never samples the last column);
- the predictor is a stack of pre-norm timm blocks (officially a post-norm `nn.TransformerEncoder`);
- the encoder adds no position encoding (officially a fixed sin-cos one on the tokens: the per-column
  weights already tell the columns apart) and its tokenizer has FT-Transformer's uniform init
  (officially trunc-normal);
- gradients are clipped by global norm over every parameter through `train.clip_grad`, not clamped
  element-wise on the context encoder's;
- the recipes: 4 encoder and predictor layers instead of the Jannis setting's 16, no dropout
  (officially 0.00185), lr 3.7e-4 for 3.6587e-4, their own batch sizes and lengths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_platform.engine.ema import ema_update, frozen_copy, linear_momentum
from ssl_platform.masking.block import gather_tokens
from ssl_platform.masking.random import column_subsets
from ssl_platform.methods.base import Method, build_backbone
from ssl_platform.models.pos_embed import sincos_1d
from ssl_platform.models.predictor import MaskedTokenPredictor


class TJEPA(Method):
    """T-JEPA over a `tabular_transformer` (or any module with its interface).

    Batch keys: `x_num`: `[B, n_num]` float (standardised), `x_cat`: `[B, n_cat]` int64 codes (0 =
    unknown), as `data.datasets.Table` gives them with no transform.

    Args:
        backbone: `tabular_transformer` (built here) or a module with `forward_features(x_num, x_cat,
            keep)`, `num_tokens`, `num_reg_tokens` and `dim`.
        backbone_kwargs: its kwargs; `num_numeric` and `cat_cardinalities` from `Table.schema()`,
            plus `dim`, `depth`, `num_heads`, `num_reg_tokens`.
        predictor_dim, predictor_depth, predictor_heads: the predictor (the paper: 16 wide, 4 heads).
        num_targets: target sets per row (the paper: 4).
        context_fraction, target_fraction: ranges of the context and target sizes as fractions of the
            columns (defaults: the official code's values for Jannis).
        momentum: EMA momentum of the target encoder, linear over training (0.996 -> 1.0).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "tabular_transformer",
        backbone_kwargs: dict | None = None,
        predictor_dim: int = 16,
        predictor_depth: int = 4,
        predictor_heads: int = 4,
        num_targets: int = 4,
        context_fraction: tuple[float, float] = (0.136, 0.368),
        target_fraction: tuple[float, float] = (0.156, 0.622),
        momentum: tuple[float, float] = (0.996, 1.0),
    ):
        super().__init__()
        encoder = build_backbone(backbone, False, 1, backbone_kwargs)
        if not all(hasattr(encoder, a) for a in ("num_tokens", "num_reg_tokens", "dim")):
            raise TypeError(
                f"T-JEPA needs a table encoder with num_tokens, num_reg_tokens and dim (tabular_transformer); "
                f"got {type(encoder).__name__}"
            )
        self.context_encoder = encoder
        self.backbone = frozen_copy(encoder)  # the EMA target encoder: evaluated and exported
        self.num_reg = encoder.num_reg_tokens
        self.num_columns = encoder.num_tokens - self.num_reg
        self.predictor = MaskedTokenPredictor(sincos_1d(encoder.num_tokens, predictor_dim), encoder.dim,
                                              predictor_depth, predictor_heads)
        self.mask_kwargs = {"num_targets": num_targets, "context_fraction": tuple(context_fraction),
                            "target_fraction": tuple(target_fraction)}
        column_subsets(1, self.num_columns, **self.mask_kwargs)  # impossible settings fail here, not at step 1
        self.momentum = tuple(momentum)
        linear_momentum(0.0, *self.momentum)

    def no_weight_decay(self) -> set[str]:
        return {"predictor.mask_token"}

    def masks(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Token positions: context `[B, R + n_c]` (the R regularization tokens first, always kept)
        and targets `[M, B, n_t]` (columns only)."""
        context, targets = column_subsets(batch_size, self.num_columns, **self.mask_kwargs)
        reg = torch.arange(self.num_reg).expand(batch_size, -1)
        context = torch.cat([reg, context + self.num_reg], dim=1)
        return context.to(device), (targets + self.num_reg).to(device)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x_num, x_cat = batch["x_num"], batch.get("x_cat")
        context_idx, target_idx = self.masks(x_num.shape[0], x_num.device)
        with torch.no_grad():
            # the encoder ends in a LayerNorm, so its tokens are the targets as they are (the paper)
            h = self.backbone.forward_features(x_num, x_cat)  # [B, R + D, H]
            targets = gather_tokens(h.repeat(target_idx.shape[0], 1, 1), target_idx.flatten(0, 1))
        context = self.context_encoder.forward_features(x_num, x_cat, keep=context_idx)
        pred = self.predictor(context, context_idx, target_idx)  # [M*B, n_t, H]
        loss = F.mse_loss(pred, targets)
        # the spread of the target tokens across rows: near 0 means the representation collapsed
        spread = h[:, self.num_reg:].std(0).mean()
        return {"loss": loss, "target_spread": spread}

    def on_step_end(self, progress: float) -> None:
        """The EMA update, after the optimizer step."""
        ema_update(self.backbone, self.context_encoder, linear_momentum(progress, *self.momentum))
