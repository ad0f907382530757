"""Heads for tables on cached features: an MLP and gradient-boosted trees, and the raw-feature backbone.

T-JEPA's protocol [0]: downstream models on the frozen representation, against the same models on the
raw features and against gradient-boosted trees. Here, both heads are scikit-learn estimators fitted
on the cached `[N, D]` features of any backbone (CPU, deterministic for a seed):

- `mlp`: `MLPClassifier` / `MLPRegressor` (Adam, ReLU) on standardised features, early-stopped on a
  validation split carved from train by scikit-learn (stratified for classes); regression targets are
  standardised for the fit and predictions mapped back, so one learning rate suits any target unit.
- `gbdt`: `HistGradientBoostingClassifier` / `Regressor`, early-stopped the same way. Trees are the
  strong baseline on raw columns (`backbone=raw`); on a learned representation they are allowed but
  rarely what one wants to compare (T-JEPA's own comparison is trees on raw features).

`RawTabular` makes "the same heads on raw features" a backbone like any other: its features are the
table's (already standardised) numeric columns followed by a one-hot code of every categorical column.

Metrics follow the other protocols: top-1 accuracy in %, or RMSE and R² (`regression.regression_metrics`).

- [0]: Thimonier et al., T-JEPA: Augmentation-Free Self-Supervised Learning for Tabular Data, ICLR 2025,
  https://arxiv.org/abs/2410.05016
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from ssl_platform.evaluation.regression import regression_metrics

KINDS = ("classification", "regression")


class RawTabular(nn.Module):
    """The identity of a table as a backbone: `[x_num, one_hot(x_cat)]`, `num_features` wide.

    Every categorical column is one-hot over its full cardinality, slot 0 (missing or unseen in
    training) included, so a missing value has its own indicator. It has no parameters.

    Args:
        num_numeric: numeric columns (`Table.schema()["num_numeric"]`).
        cat_cardinalities: codes per categorical column, the unknown slot included.
    """

    def __init__(self, num_numeric: int, cat_cardinalities: Sequence[int] = ()):
        super().__init__()
        self.num_numeric = int(num_numeric)
        self.cat_cardinalities = [int(c) for c in cat_cardinalities]
        self.num_features = self.num_numeric + sum(self.cat_cardinalities)

    def forward_features(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        """x_num: [B, n_num] float, x_cat: [B, n_cat] long -> [B, 1, num_features] (one token)."""
        if x_num.shape[1] != self.num_numeric or x_cat.shape[1] != len(self.cat_cardinalities):
            raise ValueError(
                f"RawTabular was built for {self.num_numeric} numeric and {len(self.cat_cardinalities)} "
                f"categorical columns, got {x_num.shape[1]} and {x_cat.shape[1]}; set the suite's "
                "random_backbone num_numeric and cat_cardinalities to the table's Table(...).schema()"
            )
        parts = [x_num.float()]
        for j, cardinality in enumerate(self.cat_cardinalities):
            if x_cat.shape[0] and int(x_cat[:, j].max()) >= cardinality:
                raise ValueError(f"RawTabular: categorical column {j} has code {int(x_cat[:, j].max())} "
                                 f">= its cardinality {cardinality}; the schema does not match the table")
            parts.append(nn.functional.one_hot(x_cat[:, j], cardinality).float())  # [B, card_j]
        return torch.cat(parts, dim=1).unsqueeze(1)  # [B, 1, D]

    def forward_head(self, x: Tensor, pre_logits: bool = True) -> Tensor:
        """[B, T, H] tokens -> [B, T*H]."""
        return x.flatten(1)


def make_mlp(kind: str, *, hidden: Sequence[int] = (256, 256), alpha: float = 1e-4, lr: float = 1e-3,
             batch_size: int = 256, max_iter: int = 200, val_fraction: float = 0.1, patience: int = 10,
             seed: int = 0) -> Any:
    """The `mlp` protocol's estimator: standardise, then an early-stopped MLP (see the module docstring)."""
    common = {
        "hidden_layer_sizes": tuple(int(h) for h in hidden), "alpha": alpha, "learning_rate_init": lr,
        "batch_size": batch_size, "max_iter": max_iter, "early_stopping": True,
        "validation_fraction": val_fraction, "n_iter_no_change": patience, "random_state": seed,
    }
    if _kind(kind) == "classification":
        return make_pipeline(StandardScaler(), MLPClassifier(**common))
    return TransformedTargetRegressor(make_pipeline(StandardScaler(), MLPRegressor(**common)),
                                      transformer=StandardScaler())


def make_gbdt(kind: str, *, max_iter: int = 500, learning_rate: float = 0.1, max_leaf_nodes: int = 31,
              min_samples_leaf: int = 20, l2_regularization: float = 0.0, val_fraction: float = 0.1,
              patience: int = 20, seed: int = 0) -> Any:
    """The `gbdt` protocol's estimator: histogram gradient boosting, early-stopped on a split of train."""
    kwargs = {
        "max_iter": max_iter, "learning_rate": learning_rate, "max_leaf_nodes": max_leaf_nodes,
        "min_samples_leaf": min_samples_leaf, "l2_regularization": l2_regularization, "early_stopping": True,
        "validation_fraction": val_fraction, "n_iter_no_change": patience, "random_state": seed,
    }
    if _kind(kind) == "classification":
        return HistGradientBoostingClassifier(**kwargs)
    return HistGradientBoostingRegressor(**kwargs)


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"tabular heads: kind must be one of {list(KINDS)}, got {kind!r}")
    return kind


def fit_and_score(estimator: Any, kind: str, train_x: Tensor, train_y: Tensor, test_x: Tensor,
                  test_y: Tensor) -> dict[str, float]:
    """Fit a scikit-learn estimator on cached features and score it on test.

    Args:
        estimator: from `make_mlp` / `make_gbdt` (or any scikit-learn estimator of that kind).
        kind: "classification" (int labels; metric top1 in %) or "regression" ([N] float targets;
            metrics rmse and r2).
        train_x: [N, D]; train_y: [N]. test_x: [M, D]; test_y: [M].

    Returns:
        {"top1": %} or {"rmse", "r2"}, plus "iterations": the epochs (MLP) or boosting rounds (trees)
        that early stopping kept, so a run that hit its limit can be spotted.
    """
    if train_y.ndim != 1 or test_y.ndim != 1 or len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError(
            f"tabular heads need features [N, D] with [N] targets, got {tuple(train_x.shape)} / "
            f"{tuple(train_y.shape)} and {tuple(test_x.shape)} / {tuple(test_y.shape)}"
        )
    x, x_test = (t.detach().cpu().double().numpy() for t in (train_x, test_x))
    y = train_y.detach().cpu().numpy()
    with warnings.catch_warnings():
        # max_iter reached: the fit is still scored; "iterations" shows it
        warnings.simplefilter("ignore", ConvergenceWarning)
        # a batch larger than a small table's training part is that whole part (full-batch Adam)
        warnings.filterwarnings("ignore", message="Got `batch_size` less than 1 or larger than sample size")
        estimator.fit(x, y if _kind(kind) == "classification" else y.astype(np.float64))
    pred = estimator.predict(x_test)
    if kind == "classification":
        metrics = {"top1": 100.0 * float(np.mean(pred == test_y.cpu().numpy()))}
    else:
        metrics = regression_metrics(torch.from_numpy(np.asarray(pred, np.float64)), test_y.double().cpu())
    return {**metrics, "iterations": float(_iterations(estimator))}


def _iterations(estimator: Any) -> int:
    """n_iter_ of the fitted model inside a pipeline / target transformer."""
    model = getattr(estimator, "regressor_", estimator)
    model = model.steps[-1][1] if hasattr(model, "steps") else model
    return int(model.n_iter_)
