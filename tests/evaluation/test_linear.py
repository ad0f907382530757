"""Linear probe: the L-BFGS fit against scikit-learn on real data, the λ convention, the sweep, labels.

Also the regression (ridge) and multi-label (one-vs-rest logistic) probes and their metrics, against
scikit-learn and naive hand-written references.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import average_precision_score, mean_squared_error, r2_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ssl_platform.evaluation.linear import (
    LAMBDAS,
    fit_logistic_regression,
    fit_multilabel_logistic_regression,
    fit_ridge,
    linear_probe,
    mean_average_precision,
    multilabel_probe,
    random_split,
    regression_metrics,
    ridge_probe,
    standardise,
    stratified_split,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The fits here are small: one thread is faster, and immune to other jobs on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # numpy's BLAS, under sklearn
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """sklearn's digits pixels as features: [1797, 64] float64 (some pixels are constant), labels [1797]."""
    x, y = load_digits(return_X_y=True)
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.fixture(scope="module")
def digits_split(digits):
    x, y = digits
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    train, test = perm[:1300], perm[1300:]
    return x[train], y[train], x[test], y[test]


@pytest.mark.parametrize("lam", [1e-1, 1e-2, 1e-3])
def test_fit_matches_sklearn_logistic_regression(digits, lam):
    x, y = digits
    (xs,) = standardise(x)
    weight, bias = fit_logistic_regression(xs, y, 10, lam, max_iter=3000, tol=1e-9)
    clf = LogisticRegression(C=1.0 / (lam * len(y)), tol=1e-10, max_iter=10000).fit(xs.numpy(), y.numpy())
    sk_weight = torch.from_numpy(clf.coef_.T)  # [D, C]
    scale = sk_weight.abs().max()
    assert (weight - sk_weight).abs().max() < 1e-3 * scale
    # softmax is invariant to a shift of all biases; the regularised optimum is unique only after centring
    torch.testing.assert_close(
        bias - bias.mean(),
        torch.from_numpy(clf.intercept_ - clf.intercept_.mean()),
        rtol=0,
        atol=2e-3 * scale.item(),
    )
    probs = torch.softmax(xs @ weight + bias, dim=1).numpy()
    np.testing.assert_allclose(probs, clf.predict_proba(xs.numpy()), atol=1e-4)
    assert (probs.argmax(1) == clf.predict(xs.numpy())).all()


def test_solution_is_optimal_for_the_mean_loss_convention(digits):
    """Stationarity of mean CE + (λ/2)||W||²: λ W = -Xᵀ(P - Y) / n and Σ_i (P - Y) = 0 (bias free)."""
    x, y = digits
    (xs,) = standardise(x)
    lam = 1e-2
    weight, bias = fit_logistic_regression(xs, y, 10, lam, max_iter=3000, tol=1e-10)
    residual = torch.softmax(xs @ weight + bias, dim=1) - torch.nn.functional.one_hot(y, 10)  # [N, C]
    # a sum-loss or λ·||W||² convention would miss by a factor n or 2 (up to 1e-2 here)
    torch.testing.assert_close(lam * weight, -xs.T @ residual / len(y), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        residual.sum(0) / len(y), torch.zeros(10, dtype=torch.float64), rtol=0, atol=1e-6
    )


def test_warm_start_reaches_the_same_solution(digits):
    x, y = digits
    (xs,) = standardise(x)
    init = fit_logistic_regression(xs, y, 10, 1.0, tol=1e-9)
    cold = fit_logistic_regression(xs, y, 10, 1e-2, tol=1e-9)
    warm = fit_logistic_regression(xs, y, 10, 1e-2, tol=1e-9, init=init)
    torch.testing.assert_close(warm[0], cold[0], rtol=0, atol=1e-5)


def test_probe_on_digits_pixels(digits_split):
    x, y, xt, yt = digits_split
    result = linear_probe(x, y, xt, yt)
    assert sorted(result.val_accuracy) == sorted(LAMBDAS) and len(LAMBDAS) == 9
    assert min(LAMBDAS) == pytest.approx(1e-6) and max(LAMBDAS) == pytest.approx(1e2)
    assert result.val_accuracy[result.best_lambda] == max(result.val_accuracy.values())
    assert result.test_accuracy > 93.0 and result.n_train == 1300 and result.classes == list(range(10))
    # strong regularisation underfits: the sweep is informative
    assert result.val_accuracy[100.0] < result.val_accuracy[result.best_lambda] - 10


def test_refit_matches_sklearn_with_the_chosen_lambda(digits_split):
    x, y, xt, yt = digits_split
    result = linear_probe(x, y, xt, yt, lambdas=[1e-1, 1e-2, 1e-3], tol=1e-8)
    xs, xts = standardise(x, xt)
    clf = LogisticRegression(C=1.0 / (result.best_lambda * result.n_train), tol=1e-10, max_iter=10000)
    sk_acc = 100.0 * (clf.fit(xs.numpy(), y.numpy()).predict(xts.numpy()) == yt.numpy()).mean()
    assert result.test_accuracy == pytest.approx(
        sk_acc, abs=100.0 / len(yt) + 1e-9
    )  # at most one sample apart


def test_ties_in_validation_go_to_the_larger_lambda(digits_split):
    x, y, xt, yt = digits_split
    # two λ so close that their fits classify the validation set identically
    result = linear_probe(x, y, xt, yt, lambdas=[1e-2, 1.0000001e-2])
    assert len(set(result.val_accuracy.values())) == 1 and result.best_lambda == 1.0000001e-2


def test_labels_need_not_start_at_zero(digits_split):
    x, y, xt, yt = digits_split
    keep = y != 3  # class 3 never seen in training
    base = linear_probe(x[keep], y[keep], xt, yt, lambdas=[1e-2])
    shifted = linear_probe(x[keep], y[keep] * 10 + 7, xt, yt * 10 + 7, lambdas=[1e-2])
    assert shifted.classes == [v * 10 + 7 for v in base.classes] and 37 not in shifted.classes
    assert shifted.test_accuracy == base.test_accuracy
    # every test sample of the unseen class counts as an error
    seen = yt != 3
    assert base.test_accuracy <= 100.0 * seen.double().mean().item()


def test_standardise_uses_train_statistics_only(digits):
    x, _ = digits
    train, test = standardise(x[:1000], x[1000:])
    varying = x[:1000].std(0) > 0
    torch.testing.assert_close(
        train[:, varying].mean(0), torch.zeros(int(varying.sum()), dtype=torch.float64), rtol=0, atol=1e-10
    )
    torch.testing.assert_close(
        train[:, varying].std(0, unbiased=False), torch.ones(int(varying.sum()), dtype=torch.float64)
    )
    assert torch.isfinite(train).all() and torch.isfinite(test).all()  # constant pixels are only centred
    assert test.mean(0).abs().max() > 0  # test is not re-centred on its own statistics


def test_stratified_split_keeps_class_proportions():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3])
    fit, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(101))
    assert torch.bincount(labels[val], minlength=4).tolist() == [10, 6, 4, 0]  # the singleton stays in fit
    again, _ = stratified_split(labels, 0.2, seed=0)
    other, _ = stratified_split(labels, 0.2, seed=1)
    assert torch.equal(fit, again) and not torch.equal(fit, other)


def test_errors_say_what_to_do(digits_split):
    x, y, xt, yt = digits_split
    with pytest.raises(ValueError, match="at least 2 are needed"):
        linear_probe(x[y == 0], y[y == 0], xt, yt)
    with pytest.raises(ValueError, match="lambdas is empty"):
        linear_probe(x, y, xt, yt, lambdas=[])
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        linear_probe(x, y, xt, yt, val_fraction=1.0)
    with pytest.raises(ValueError, match="leaves no validation samples"):
        linear_probe(x[:4], torch.tensor([0, 1, 0, 1]), xt, yt, val_fraction=0.1)


# ---------------------------------------------------------------- regression


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


def test_random_split_is_seeded_disjoint_and_complete():
    fit, val = random_split(101, 0.2, seed=0)
    assert len(val) == 20 and sorted(torch.cat([fit, val]).tolist()) == list(range(101))
    assert torch.equal(fit, fit.sort().values) and torch.equal(val, val.sort().values)
    assert torch.equal(random_split(101, 0.2, seed=0)[1], val) and not torch.equal(
        random_split(101, 0.2, 1)[1], val
    )


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


# ---------------------------------------------------------------- multi-label


def naive_average_precision(scores, targets):
    """Sort by score; AP = mean over the positives of the precision at the positive's rank (no ties)."""
    order = np.argsort(-scores)
    hits = targets[order]
    ranks = np.flatnonzero(hits) + 1  # 1-based rank of each positive
    return np.mean(np.arange(1, len(ranks) + 1) / ranks)


def test_mean_average_precision_matches_naive_loop_and_sklearn():
    rng = np.random.default_rng(0)
    targets = (rng.random((60, 5)) < [0.1, 0.3, 0.5, 0.8, 0.0]).astype(
        np.int64
    )  # the last label: no positive
    scores = targets + rng.normal(0, 0.8, targets.shape)  # continuous scores: no ties
    with pytest.warns(UserWarning, match="1 of 5 labels have no positive; skipped"):
        value = mean_average_precision(torch.from_numpy(scores), torch.from_numpy(targets))
    naive = 100 * np.mean([naive_average_precision(scores[:, j], targets[:, j]) for j in range(4)])
    sk = 100 * np.mean([average_precision_score(targets[:, j], scores[:, j]) for j in range(4)])
    assert value == pytest.approx(naive, rel=1e-12) and value == pytest.approx(sk, rel=1e-12)
    assert 50 < value < 100
    # a perfect ranking scores 100; float and bool targets are accepted
    assert (
        mean_average_precision(
            torch.from_numpy(targets[:, :4] * 2.0), torch.from_numpy(targets[:, :4]).bool()
        )
        == 100.0
    )


def multilabel_problem(n=500, m=300, d=20, labels=5, noise=0.3, seed=0):
    """Each label is a noisy linear threshold of the features, with varied base rates."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + m, d, generator=g, dtype=torch.float64) * torch.linspace(
        0.5, 3.0, d, dtype=torch.float64
    )
    w = torch.randn(d, labels, generator=g, dtype=torch.float64)
    logits = torch.nn.functional.normalize(x, dim=1) @ w * 5
    y = (
        logits + noise * torch.randn(n + m, labels, generator=g, dtype=torch.float64)
        > torch.linspace(-2, 2, labels)
    ).double()
    return x[:n], y[:n], x[n:], y[n:]


def test_multilabel_fit_matches_sklearn_one_vs_rest():
    x, y, _, _ = multilabel_problem(noise=1.0, seed=1)
    (xs,) = standardise(x)
    lam = 1e-2
    weight, bias = fit_multilabel_logistic_regression(xs, y, lam, max_iter=3000, tol=1e-9)
    ref = OneVsRestClassifier(LogisticRegression(C=1.0 / (lam * len(x)), tol=1e-10, max_iter=10000))
    ref.fit(xs.numpy(), y.numpy())
    probs = torch.sigmoid(xs @ weight + bias).numpy()
    np.testing.assert_allclose(probs, ref.predict_proba(xs.numpy()), atol=1e-4)
    assert ((probs > 0.5) == ref.predict(xs.numpy())).mean() > 0.99
    sk_weight = np.stack([e.coef_[0] for e in ref.estimators_], axis=1)  # [D, L]
    np.testing.assert_allclose(weight.numpy(), sk_weight, atol=1e-3 * np.abs(sk_weight).max())


def test_multilabel_fit_is_optimal_for_the_per_label_mean_convention():
    """Stationarity of Σ_l mean_i BCE + (λ/2)||W||²: λ W = -Xᵀ(σ - Y) / n; a mean over labels misses by L."""
    x, y, _, _ = multilabel_problem(noise=1.0, seed=2)
    (xs,) = standardise(x)
    lam = 1e-2
    weight, bias = fit_multilabel_logistic_regression(xs, y, lam, max_iter=3000, tol=1e-10)
    residual = torch.sigmoid(xs @ weight + bias) - y  # [N, L]
    assert (lam * weight).abs().max() > 1e-3  # so a factor L (or 2) would show
    torch.testing.assert_close(lam * weight, -xs.T @ residual / len(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(residual.mean(0), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-6)


def test_multilabel_probe_on_nearly_separable_data():
    x, y, xt, yt = multilabel_problem(noise=0.1, seed=3)
    result = multilabel_probe(x, y, xt, yt, lambdas=[1.0, 1e-1, 1e-2, 1e-3])
    assert sorted(result.val_map) == [1e-3, 1e-2, 1e-1, 1.0] and result.n_train == 500
    assert result.val_map[result.best_lambda] == max(result.val_map.values())
    assert result.test_map > 97.0
    # a useless feature set (pure noise) is near the label base rates, far below
    noise = torch.randn(800, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    chance = multilabel_probe(noise[:500], y, noise[500:], yt, lambdas=[1e-1])
    assert chance.test_map < 70.0


def test_multilabel_probe_refit_matches_sklearn_with_the_chosen_lambda():
    x, y, xt, yt = multilabel_problem(noise=1.0, seed=4)
    result = multilabel_probe(x, y, xt, yt, lambdas=[1e-1, 1e-2], tol=1e-8)
    xs, xts = standardise(x, xt)
    ref = OneVsRestClassifier(
        LogisticRegression(C=1.0 / (result.best_lambda * result.n_train), tol=1e-10, max_iter=10000)
    )
    ref_scores = ref.fit(xs.numpy(), y.numpy()).predict_proba(xts.numpy())
    sk_map = 100 * np.mean([average_precision_score(yt.numpy()[:, j], ref_scores[:, j]) for j in range(5)])
    assert result.test_map == pytest.approx(sk_map, abs=0.1)


def test_multilabel_errors_say_what_to_do():
    x, y, xt, yt = multilabel_problem(n=100, m=50)
    with pytest.raises(ValueError, match="train_y must be 0 or 1; binarise them"):
        multilabel_probe(x, y * 2, xt, yt)
    with pytest.raises(ValueError, match="test_y must be 0 or 1"):
        multilabel_probe(x, y, xt, yt - 0.5)
    with pytest.raises(ValueError, match=r"targets must be \[N, L\].*use shape \[N, 1\]"):
        multilabel_probe(x, y[:, 0], xt, yt[:, 0])
    with pytest.raises(ValueError, match=r"train_y is \(100, 5\) but test_y is \(50, 4\)"):
        multilabel_probe(x, y, xt, yt[:, :4])
    with pytest.raises(ValueError, match="test_x holds NaN or inf"):
        multilabel_probe(x, y, xt * float("nan"), yt)
    with pytest.raises(ValueError, match="non-empty"):
        multilabel_probe(x, y, xt[:0], yt[:0])
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        multilabel_probe(x, y, xt, yt, val_fraction=0.0)
    with pytest.raises(ValueError, match="no label has a positive"):
        mean_average_precision(torch.rand(10, 3), torch.zeros(10, 3))
    with pytest.raises(ValueError, match=r"same shape.*use shape \[M, 1\]"):
        mean_average_precision(torch.rand(10), torch.ones(10))
    with pytest.raises(ValueError, match="scores hold NaN"):
        mean_average_precision(torch.full((4, 2), float("nan")), torch.ones(4, 2))
