"""Ridge regression probe and its metrics, against scikit-learn and hand-written formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.preprocessing import StandardScaler

from ssl_platform.evaluation.lbfgs import LAMBDAS, random_split, standardise
from ssl_platform.evaluation.regression import fit_ridge, regression_metrics, ridge_probe


@pytest.fixture(scope="module")
def diabetes_split():
    """sklearn's diabetes regression set: [442, 10] features, [442] targets; 350 train, 92 test."""
    x, y = load_diabetes(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    x, y = torch.from_numpy(x[perm]), torch.from_numpy(y[perm])
    return x[:350], y[:350], x[350:], y[350:]


def multi_output_problem(n=300, m=100, d=15, outputs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-1, 2, d, dtype=torch.float64)  # features on very different scales
    x = torch.randn(n + m, d, generator=g, dtype=torch.float64) * scale + 5.0
    w = torch.randn(d, outputs, generator=g, dtype=torch.float64) / scale[:, None]
    y = x @ w + torch.tensor([10.0, -3.0, 0.5], dtype=torch.float64)[:outputs]
    y = y + 0.5 * torch.randn(n + m, outputs, generator=g, dtype=torch.float64)
    return x[:n], y[:n], x[n:], y[n:]


@pytest.mark.parametrize("lam", [0.0, 1e-3, 1e-1, 10.0])
def test_fit_ridge_matches_sklearn_ridge_with_alpha_lambda_n(lam):
    x, y, xt, _ = multi_output_problem()
    xs, xts = standardise(x, xt)
    weight, bias = fit_ridge(xs, y, lam)
    assert weight.shape == (15, 3) and bias.shape == (3,)
    ref = Ridge(alpha=lam * len(x), solver="svd").fit(xs.numpy(), y.numpy())
    np.testing.assert_allclose(weight.numpy(), ref.coef_.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bias.numpy(), ref.intercept_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose((xts @ weight + bias).numpy(), ref.predict(xts.numpy()), rtol=1e-8, atol=1e-8)
    # raw features (mean 5, scales 0.1 to 100): the intercept must absorb the feature means too
    raw_weight, raw_bias = fit_ridge(x, y, lam)
    raw_ref = Ridge(alpha=lam * len(x), solver="svd").fit(x.numpy(), y.numpy())
    np.testing.assert_allclose(
        (xt @ raw_weight + raw_bias).numpy(), raw_ref.predict(xt.numpy()), rtol=1e-7, atol=1e-7
    )


def test_fit_ridge_is_optimal_for_the_mean_loss_convention():
    """Stationarity of mean ||y - Wx - b||² + λ||W||²: λ W = Xᵀ r / n and Σ r = 0 (a sum loss misses by n)."""
    x, y, _, _ = multi_output_problem(seed=1)
    (xs,) = standardise(x)
    lam = 0.3
    weight, bias = fit_ridge(xs, y, lam)
    residual = y - xs @ weight - bias  # [N, T]
    torch.testing.assert_close(lam * weight, xs.T @ residual / len(x), rtol=0, atol=1e-10)
    torch.testing.assert_close(residual.mean(0), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-10)


def test_ridge_probe_matches_an_independent_sklearn_sweep(diabetes_split):
    """Rebuild the sweep with StandardScaler + Ridge on the same split: same val RMSEs, same λ, same test."""
    x, y, xt, yt = diabetes_split
    result = ridge_probe(x, y, xt, yt, seed=3)
    fit, val = (i.numpy() for i in random_split(len(x), 0.2, seed=3))
    expected = {}
    for lam in LAMBDAS:
        scaler = StandardScaler().fit(x.numpy()[fit])
        ref = Ridge(alpha=lam * len(fit)).fit(scaler.transform(x.numpy()[fit]), y.numpy()[fit])
        pred = ref.predict(scaler.transform(x.numpy()[val]))
        expected[lam] = float(np.sqrt(np.mean((pred - y.numpy()[val]) ** 2)))
    assert sorted(result.val_rmse) == sorted(expected)
    for lam in LAMBDAS:
        assert result.val_rmse[lam] == pytest.approx(expected[lam], rel=1e-8)
    best = min(expected, key=expected.get)
    assert result.best_lambda == best and best not in (min(LAMBDAS), max(LAMBDAS))  # an interior optimum
    scaler = StandardScaler().fit(x.numpy())
    ref = Ridge(alpha=best * len(x)).fit(scaler.transform(x.numpy()), y.numpy())
    pred = ref.predict(scaler.transform(xt.numpy()))
    assert result.n_train == 350
    assert result.test_rmse == pytest.approx(np.sqrt(mean_squared_error(yt.numpy(), pred)), rel=1e-8)
    assert result.test_r2 == pytest.approx(r2_score(yt.numpy(), pred), rel=1e-8)
    assert 0.3 < result.test_r2 < 0.7  # diabetes is a noisy target: informative but far from perfect


def test_ridge_probe_multi_output_and_seeds():
    x, y, xt, yt = multi_output_problem(seed=2)
    result = ridge_probe(x, y, xt, yt)
    assert result.test_r2 > 0.9 and result.test_rmse < 1.0  # noise std is 0.5
    assert result.val_rmse[100.0] > 2 * result.val_rmse[result.best_lambda]
    other = ridge_probe(x, y, xt, yt, seed=1)
    assert other.val_rmse != result.val_rmse  # the split depends on the seed
    assert ridge_probe(x, y, xt, yt).val_rmse == result.val_rmse  # and only on it


def test_ridge_probe_ties_go_to_the_larger_lambda(diabetes_split):
    x, y, xt, yt = diabetes_split
    # λ I below float64 resolution of the Gram matrix: both solves are bit-identical
    result = ridge_probe(x, y, xt, yt, lambdas=[1e-300, 2e-300])
    assert result.val_rmse[1e-300] == result.val_rmse[2e-300] and result.best_lambda == 2e-300


def test_regression_metrics_match_sklearn_and_hand_formulas():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(50, 3, generator=g, dtype=torch.float64) * torch.tensor(
        [1.0, 10.0, 0.1], dtype=torch.float64
    )
    pred = target + torch.randn(50, 3, generator=g, dtype=torch.float64) * 0.5
    metrics = regression_metrics(pred, target)
    t, p = target.numpy(), pred.numpy()
    assert metrics["rmse"] == pytest.approx(np.sqrt(mean_squared_error(t, p)), rel=1e-12)
    assert metrics["r2"] == pytest.approx(r2_score(t, p), rel=1e-12)
    # by hand: RMSE over all entries, R² averaged uniformly over the outputs
    assert metrics["rmse"] == pytest.approx(np.sqrt(((p - t) ** 2).sum() / t.size), rel=1e-12)
    r2_each = [
        1 - ((p[:, j] - t[:, j]) ** 2).sum() / ((t[:, j] - t[:, j].mean()) ** 2).sum() for j in range(3)
    ]
    assert metrics["r2"] == pytest.approx(np.mean(r2_each), rel=1e-12)
    assert r2_each[2] < 0 < r2_each[1]  # the uniform average is not variance-weighted
    single = regression_metrics(pred[:, 1], target[:, 1])
    assert single["r2"] == pytest.approx(r2_each[1]) and single["rmse"] == pytest.approx(
        np.sqrt(np.mean((p - t)[:, 1] ** 2))
    )
    assert regression_metrics(target, target) == {"rmse": 0.0, "r2": 1.0}


def test_regression_errors_say_what_to_do(diabetes_split):
    x, y, xt, yt = diabetes_split
    with pytest.raises(ValueError, match=r"test_y must be \[92\] or \[92, T\] to match test_x"):
        ridge_probe(x, y, xt, yt[:5])
    with pytest.raises(ValueError, match="train_x have D=10 but test_x have D=4"):
        ridge_probe(x, y, xt[:, :4], yt)
    with pytest.raises(ValueError, match="train_x holds NaN or inf; drop or impute"):
        ridge_probe(torch.where(x > 0.1, float("nan"), x), y, xt, yt)
    with pytest.raises(ValueError, match="non-empty"):
        ridge_probe(x[:0], y[:0], xt, yt)
    with pytest.raises(ValueError, match="lambdas is empty"):
        ridge_probe(x, y, xt, yt, lambdas=[])
    with pytest.raises(ValueError, match="lambda must be >= 0"):
        ridge_probe(x, y, xt, yt, lambdas=[-1.0])
    with pytest.raises(ValueError, match="leaves no validation samples"):
        ridge_probe(x[:3], y[:3], xt, yt, val_fraction=0.1)
    with pytest.raises(ValueError, match="R² needs at least 2 samples"):
        ridge_probe(x, y, xt[:1], yt[:1])
    with pytest.raises(ValueError, match="same shape"):
        regression_metrics(yt, yt[:, None])
