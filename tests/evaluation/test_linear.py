"""Linear probe: the L-BFGS fit against scikit-learn on real data, the λ convention, the sweep, labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from ssl_platform.evaluation.lbfgs import LAMBDAS, random_split, standardise
from ssl_platform.evaluation.linear import fit_logistic_regression, linear_probe, stratified_split


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


def test_a_given_validation_split_selects_lambda_and_joins_the_refit(digits_split):
    x, y, xt, yt = digits_split
    lambdas = [1e-3, 1e-1, 10.0]
    result = linear_probe(x[:1000], y[:1000], xt, yt, lambdas=lambdas, tol=1e-8, val=(x[1000:], y[1000:]))
    assert result.n_train == 1300  # refit on train + val
    # the validation accuracies are those of fits on the first 1000 scored on the last 300, recomputed here
    for lam in lambdas:
        xs, xv = standardise(x[:1000], x[1000:])
        clf = LogisticRegression(C=1.0 / (lam * 1000), tol=1e-10, max_iter=10000).fit(xs.numpy(), y[:1000].numpy())
        expected = 100.0 * (clf.predict(xv.numpy()) == y[1000:].numpy()).mean()
        assert result.val_accuracy[lam] == pytest.approx(expected, abs=100.0 / 300 + 1e-9)


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


def test_random_split_is_seeded_disjoint_and_complete():
    fit, val = random_split(101, 0.2, seed=0)
    assert len(val) == 20 and sorted(torch.cat([fit, val]).tolist()) == list(range(101))
    assert torch.equal(fit, fit.sort().values) and torch.equal(val, val.sort().values)
    assert torch.equal(random_split(101, 0.2, seed=0)[1], val) and not torch.equal(
        random_split(101, 0.2, 1)[1], val
    )
