"""Multi-label (one-vs-rest logistic) probe and mAP, against scikit-learn and a naive hand-written AP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.multiclass import OneVsRestClassifier

from ssl_platform.evaluation.lbfgs import standardise
from ssl_platform.evaluation.multilabel import (
    fit_multilabel_logistic_regression,
    mean_average_precision,
    multilabel_probe,
)


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
