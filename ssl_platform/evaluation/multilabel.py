"""Multi-label probe on cached features: one-vs-rest logistic regression fitted jointly with L-BFGS.

The protocol of `linear.py` (standardise, sweep λ on a validation split carved from train, refit on
train + validation, score test once; the shared pieces, L-BFGS included, are in `lbfgs.py`), with a
random split since there are no classes.

Objective (the convention every result of this module uses), targets [N, L] in {0, 1}:

    Σ_l mean_i BCE(x_i w_l + b_l, y_il) + (λ / 2) ||W||²       (the biases b_l are not regularised)

Summing over labels keeps every label an independent binary probe with the convention of `linear.py`
(`C = 1 / (λ n)` in scikit-learn) whatever L is. Metric: mAP, the macro mean over labels of average
precision (`mean_average_precision`); labels with no positive in the evaluated set have no AP and are
skipped, with a warning.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from torch import Tensor

from ssl_platform.evaluation.lbfgs import (
    LAMBDAS,
    check_probe_inputs,
    fit_lbfgs,
    random_split,
    standardise,
    sweep_lambdas,
)


@dataclasses.dataclass
class MultilabelProbeResult:
    """What `multilabel_probe` measured.

    Attributes:
        best_lambda: the λ with the highest validation mAP (sklearn's `C = 1 / (best_lambda * n_train)`).
        val_map: λ -> validation mAP % of the model fitted on the rest of train.
        test_map: mAP % on test of the best λ refitted on train + validation.
        n_train: samples of the refit.
    """

    best_lambda: float
    val_map: dict[float, float]
    test_map: float
    n_train: int


def fit_multilabel_logistic_regression(
    x: Tensor,
    y: Tensor,
    lam: float,
    max_iter: int = 1000,
    tol: float = 1e-4,
    init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Minimise Σ_l mean_i BCE(x_i w_l + b_l, y_il) + (λ/2)||W||², all L labels in one L-BFGS run.

    The objective is a sum of independent per-label problems, so this is one-vs-rest logistic
    regression; `tol` bounds each label's gradient as it would in a separate fit.

    Args:
        x: [N, D] features (standardised by the caller), float64 recommended.
        y: [N, L] float targets in {0, 1}.
        lam, max_iter, tol, init: as in `linear.fit_logistic_regression` (init is ([D, L], [L])).

    Returns:
        weight: [D, L], bias: [L], detached.
    """

    def loss(logits: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(y)

    return fit_lbfgs(x, y.shape[1], loss, lam, max_iter, tol, init)


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """mAP in percent: the macro mean over labels of sklearn's (non-interpolated) average precision.

    Labels without a positive in `targets` have no AP; they are skipped with a warning saying how many.

    Args:
        scores: [M, L] real scores (higher = more likely), e.g. logits or probabilities.
        targets: [M, L] in {0, 1}.

    Returns:
        mAP in [0, 100].
    """
    if scores.ndim != 2 or scores.shape != targets.shape or scores.numel() == 0:
        raise ValueError(
            f"mAP: scores and targets must be non-empty [M, L] of the same shape, got "
            f"{tuple(scores.shape)} and {tuple(targets.shape)}; for one label use shape [M, 1]"
        )
    s, t = (v.detach().to("cpu", torch.float64).numpy() for v in (scores, targets))
    if not np.isfinite(s).all():
        raise ValueError("mAP: scores hold NaN or inf; check the model's output")
    _check_binary(t, "mAP: targets")
    has_pos = t.sum(axis=0) > 0
    if not has_pos.any():
        raise ValueError("mAP: no label has a positive sample, so mAP is undefined; evaluate on more samples")
    if not has_pos.all():
        warnings.warn(f"mAP: {int((~has_pos).sum())} of {len(has_pos)} labels have no positive; skipped")
    return 100.0 * float(average_precision_score(t[:, has_pos], s[:, has_pos], average="macro"))


def _check_binary(y: np.ndarray | Tensor, name: str) -> None:
    if not ((y == 0) | (y == 1)).all():
        raise ValueError(
            f"{name} must be 0 or 1; binarise them (e.g. targets > 0), or use ridge_probe for real values"
        )


def multilabel_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    lambdas: Sequence[float] = LAMBDAS,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
    tol: float = 1e-4,
    device: str | torch.device = "cpu",
) -> MultilabelProbeResult:
    """One-vs-rest logistic probe: λ by validation mAP on a random split, refit on all of train, test mAP.

    The sweep and refit run as in `linear.linear_probe` (largest λ first, warm-started, ties to the larger λ,
    float64), with `fit_multilabel_logistic_regression`. A label never positive (or never negative) in
    the fitted part gets a large negative (positive) bias; labels without a positive in an evaluated
    set are skipped by the mAP, with a warning.

    Args:
        train_x: [N, D] features; train_y: [N, L] in {0, 1}.
        test_x: [M, D]; test_y: [M, L] in {0, 1}.
        lambdas, max_iter, tol, device: as in `linear.linear_probe`.
        val_fraction: share of train held out (at random) for the sweep.
        seed: seed of the validation split.

    Returns:
        MultilabelProbeResult.
    """
    if train_y.ndim != 2 or test_y.ndim != 2:
        raise ValueError(
            f"multilabel probe: targets must be [N, L], got {tuple(train_y.shape)} and "
            f"{tuple(test_y.shape)}; for one label use shape [N, 1]"
        )
    x, y, x_test, y_test = check_probe_inputs(train_x, train_y, test_x, test_y, "multilabel probe", device)
    _check_binary(y, "multilabel probe: train_y")
    _check_binary(y_test, "multilabel probe: test_y")
    fit_idx, val_idx = (i.to(device) for i in random_split(len(x), val_fraction, seed))
    x_fit, x_val = standardise(x[fit_idx], x[val_idx])

    def fit(lam: float, init: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        return fit_multilabel_logistic_regression(x_fit, y[fit_idx], lam, max_iter, tol, init)

    def val_map(params: tuple[Tensor, Tensor]) -> float:
        return mean_average_precision(x_val @ params[0] + params[1], y[val_idx])

    scores, best_lambda, best_params = sweep_lambdas(lambdas, fit, val_map, higher_is_better=True)
    x_all, x_test = standardise(x, x_test)
    weight, bias = fit_multilabel_logistic_regression(x_all, y, best_lambda, max_iter, tol, init=best_params)
    test_map = mean_average_precision(x_test @ weight + bias, y_test)
    return MultilabelProbeResult(best_lambda, scores, test_map, n_train=len(x))
