"""Regression probe on cached features: closed-form ridge regression, and its metrics.

The protocol of `linear.py` (standardise, sweep λ on a validation split carved from train, refit on
train + validation, score test once; the shared pieces are in `lbfgs.py`), with a random split since
there are no classes.

Objective (the convention every result of this module uses), targets [N] or [N, T]:

    mean_i ||y_i - W x_i - b||² + λ ||W||²_F       (the bias b is not regularised)

so each output is scikit-learn's `Ridge` with `alpha = λ n`, n the number of training samples.
Metrics: RMSE over all entries and R² averaged uniformly over outputs (`regression_metrics`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import mean_squared_error, r2_score
from torch import Tensor

from ssl_platform.evaluation.lbfgs import (
    LAMBDAS,
    check_probe_inputs,
    random_split,
    standardise,
    sweep_lambdas,
)


@dataclasses.dataclass
class RegressionProbeResult:
    """What `ridge_probe` measured.

    Attributes:
        best_lambda: the λ with the lowest validation RMSE (`mean ||r||² + λ||W||²`; sklearn `alpha = λ n`).
        val_rmse: λ -> validation RMSE of the model fitted on the rest of train.
        test_rmse, test_r2: `regression_metrics` on test of the best λ refitted on train + validation.
        n_train: samples of the refit.
    """

    best_lambda: float
    val_rmse: dict[float, float]
    test_rmse: float
    test_r2: float
    n_train: int


def fit_ridge(x: Tensor, y: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """Closed-form minimiser of mean_i ||y_i - W x_i - b||² + λ||W||²_F, b unregularised.

    Centring x and y removes b; the normal equations are then (XcᵀXc / n + λ I) W = Xcᵀ Yc / n,
    scikit-learn's `Ridge(alpha=λ n)`. λ = 0 gives the minimum-norm least-squares solution.

    Args:
        x: [N, D] features, float64 recommended.
        y: [N, T] targets.
        lam: λ >= 0.

    Returns:
        weight: [D, T], bias: [T].
    """
    if lam < 0:
        raise ValueError(f"ridge probe: lambda must be >= 0, got {lam}")
    x_mean, y_mean = x.mean(dim=0), y.mean(dim=0)
    xc, yc = x - x_mean, y - y_mean
    gram, rhs = xc.T @ xc / len(x), xc.T @ yc / len(x)  # [D, D], [D, T]
    if lam > 0:
        weight = torch.linalg.solve(gram + lam * torch.eye(len(gram), dtype=x.dtype, device=x.device), rhs)
    else:  # the Gram matrix may be singular (constant or collinear features)
        weight = torch.linalg.pinv(gram, hermitian=True) @ rhs
    return weight, y_mean - x_mean @ weight


def regression_metrics(pred: Tensor, target: Tensor) -> dict[str, float]:
    """RMSE and R² of predictions.

    RMSE is the root of the mean squared error over all entries (sklearn's `mean_squared_error`, whose
    uniform average over outputs is the same mean). R² is sklearn's `r2_score` averaged uniformly over
    outputs; an output with constant targets scores 1 if predicted exactly and 0 otherwise.

    Args:
        pred, target: [M] or [M, T], the same shape, M >= 2.

    Returns:
        {"rmse": float, "r2": float}.
    """
    if pred.shape != target.shape or pred.ndim not in (1, 2):
        raise ValueError(
            f"regression metrics: pred and target must both be [M] or [M, T] of the same shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if len(pred) < 2:
        raise ValueError(f"regression metrics: R² needs at least 2 samples, got {len(pred)}")
    p, t = (v.detach().to("cpu", torch.float64).numpy() for v in (pred, target))
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("regression metrics: pred or target holds NaN or inf; check the model and the data")
    return {"rmse": float(np.sqrt(mean_squared_error(t, p))), "r2": float(r2_score(t, p))}


def ridge_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    lambdas: Sequence[float] = LAMBDAS,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> RegressionProbeResult:
    """Ridge regression probe: λ by validation RMSE on a random split, refit on all of train, score test.

    Features are standardised with the statistics of the fitted part; targets are only centred (by the
    intercept), so RMSE is in the targets' units. Everything is solved in closed form in float64.

    Args:
        train_x: [N, D] features; train_y: [N] or [N, T] float targets.
        test_x: [M, D]; test_y: [M] or [M, T], M >= 2.
        lambdas: λ values to sweep (`mean ||r||² + λ||W||²` convention; sklearn `alpha = λ n`).
        val_fraction: share of train held out (at random) for the sweep.
        seed: seed of the validation split.

    Returns:
        RegressionProbeResult.
    """
    x, y, x_test, y_test = check_probe_inputs(train_x, train_y, test_x, test_y, "ridge probe", "cpu")
    fit_idx, val_idx = random_split(len(x), val_fraction, seed)
    x_fit, x_val = standardise(x[fit_idx], x[val_idx])

    def val_rmse(params: tuple[Tensor, Tensor]) -> float:
        return (x_val @ params[0] + params[1] - y[val_idx]).square().mean().sqrt().item()

    scores, best_lambda, _ = sweep_lambdas(
        lambdas, lambda lam, _: fit_ridge(x_fit, y[fit_idx], lam), val_rmse, higher_is_better=False
    )
    x_all, x_test = standardise(x, x_test)
    weight, bias = fit_ridge(x_all, y, best_lambda)
    metrics = regression_metrics(x_test @ weight + bias, y_test)
    return RegressionProbeResult(best_lambda, scores, metrics["rmse"], metrics["r2"], n_train=len(x))
