"""Weighted kNN: exact agreement with a naive loop and with scikit-learn, invariances, presets, errors.

Regression and multi-label scores are checked against a brute-force numpy loop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from ssl_platform.evaluation.knn import (
    KNN_PRESETS,
    knn_accuracy,
    knn_multilabel_scores,
    knn_predict,
    knn_regression,
    knn_search,
    preset,
)


def naive_knn(train, train_labels, test, k, temperature, num_classes):
    """The DINO vote written as a loop over queries, in float64."""
    bank = torch.nn.functional.normalize(train.double(), dim=1)
    preds = []
    for q in torch.nn.functional.normalize(test.double(), dim=1):
        sims = bank @ q  # [N]
        order = torch.argsort(sims, descending=True, stable=True)[:k]
        votes = torch.zeros(num_classes, dtype=torch.float64)
        for j in order:
            votes[train_labels[j]] += torch.exp(sims[j] / temperature)
        preds.append(int(torch.argmax(votes)))
    return torch.tensor(preds)


def random_problem(n=400, m=120, d=16, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g)
    y, yt = torch.randint(0, classes, (n,), generator=g), torch.randint(0, classes, (m,), generator=g)
    # overlapping clusters: neighbours disagree, so the weighting matters
    x = centres[y] + 1.5 * torch.randn(n, d, generator=g)
    xt = centres[yt] + 1.5 * torch.randn(m, d, generator=g)
    return x, y, xt, yt


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (5, 0.5), *KNN_PRESETS.values(), (400, 1.0)])
def test_matches_naive_loop_exactly(k, temperature):
    x, y, xt, _ = random_problem()
    pred = knn_predict(x, y, xt, k=k, temperature=temperature, num_classes=5)
    assert pred.dtype == torch.int64 and pred.shape == (120,)
    assert torch.equal(pred, naive_knn(x, y, xt, k, temperature, 5))


@pytest.mark.parametrize("k, temperature", KNN_PRESETS.values())
def test_matches_sklearn_with_the_same_weights(k, temperature):
    """sklearn's cosine distance is 1 - sim, so weights exp((1 - d) / T) are exactly the DINO vote."""
    x, y, xt, _ = random_problem(seed=1)
    clf = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1.0 - d) / temperature)
    ).fit(x.numpy(), y.numpy())
    pred = knn_predict(x, y, xt, k=k, temperature=temperature, num_classes=5)
    assert pred.tolist() == clf.predict(xt.numpy()).tolist()


def test_one_neighbour_is_sklearn_nearest_neighbour():
    x, y, xt, _ = random_problem(seed=2)
    clf = KNeighborsClassifier(n_neighbors=1, metric="cosine", algorithm="brute").fit(x.numpy(), y.numpy())
    assert knn_predict(x, y, xt, 1, 0.07, 5).tolist() == clf.predict(xt.numpy()).tolist()


def test_huge_temperature_is_a_majority_vote():
    """As T grows every weight tends to 1: with 2 classes and odd k there are no ties to break differently."""
    x, y, xt, _ = random_problem(classes=2, seed=3)
    clf = KNeighborsClassifier(n_neighbors=15, metric="cosine", algorithm="brute").fit(x.numpy(), y.numpy())
    assert knn_predict(x, y, xt, 15, 1e9, 2).tolist() == clf.predict(xt.numpy()).tolist()
    # and the temperature matters at the preset: the vote is not a plain majority there
    assert knn_predict(x, y, xt, 200, 0.01, 2).tolist() != knn_predict(x, y, xt, 200, 1e9, 2).tolist()


def test_invariant_to_feature_scale():
    x, y, xt, _ = random_problem(seed=4)
    g = torch.Generator().manual_seed(0)
    scaled_x = x * torch.rand(len(x), 1, generator=g).add(0.1) * 1e3
    scaled_xt = xt * torch.rand(len(xt), 1, generator=g).add(0.1) * 1e-3
    assert torch.equal(knn_predict(x, y, xt, 20, 0.07, 5), knn_predict(scaled_x, y, scaled_xt, 20, 0.07, 5))


def test_tiny_temperature_does_not_overflow_and_tends_to_one_neighbour():
    x, y, xt, _ = random_problem(seed=5)
    # exp(sim / 1e-8) is inf in float64; the vote must still be the nearest neighbour's class
    assert torch.equal(knn_predict(x, y, xt, 20, 1e-8, 5), knn_predict(x, y, xt, 1, 0.07, 5))


def test_search_is_exact_cosine_top_k():
    x, _, xt, _ = random_problem(seed=6)
    sims, idx = knn_search(x, xt, 7)
    ref = torch.nn.functional.normalize(xt, dim=1) @ torch.nn.functional.normalize(x, dim=1).T  # [M, N]
    ref_sims, ref_idx = ref.topk(7, dim=1)
    torch.testing.assert_close(sims, ref_sims, rtol=0, atol=1e-5)
    assert torch.equal(idx, ref_idx)


def test_accuracy_is_percent_of_correct_predictions():
    x, y, xt, yt = random_problem(seed=7)
    pred = knn_predict(x, y, xt, 20, 0.07, 5)
    expected = 100.0 * (pred == yt).double().mean().item()
    assert knn_accuracy(x, y, xt, yt, k=20, temperature=0.07, num_classes=5) == pytest.approx(expected)
    assert 30 < expected < 100  # overlapping clusters: informative but not trivial
    # well-separated clusters are classified perfectly
    centres = torch.eye(4) * 10
    labels = torch.arange(4).repeat(25)
    feats = centres[labels] + 0.1 * torch.randn(100, 4)
    assert knn_accuracy(feats, labels, feats[:20] + 0.01, labels[:20], 20, 0.07, 4) == 100.0


def test_k_larger_than_bank_is_clamped_with_a_warning():
    x, y, xt, _ = random_problem(n=30, seed=8)
    with pytest.warns(UserWarning, match="exceeds the bank of 30"):
        pred = knn_predict(x, y, xt, 200, 0.1, 5)
    assert torch.equal(pred, knn_predict(x, y, xt, 30, 0.1, 5))


def test_presets_and_errors():
    assert KNN_PRESETS == {"k20_t0.07": (20, 0.07), "k200_t0.1": (200, 0.1)}
    assert preset("k200_t0.1") == (200, 0.1)
    with pytest.raises(ValueError, match="valid presets: k20_t0.07, k200_t0.1"):
        preset("k10")
    x, y, xt, yt = random_problem()
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        knn_predict(x, y, xt, 5, 0.1, num_classes=3)
    with pytest.raises(ValueError, match="temperature"):
        knn_predict(x, y, xt, 5, 0.0, 5)
    with pytest.raises(ValueError, match="D=16 but test_feats have D=8"):
        knn_predict(x, y, xt[:, :8], 5, 0.1, 5)
    with pytest.raises(ValueError, match="NaN"):
        knn_predict(x, y, xt * float("nan"), 5, 0.1, 5)
    with pytest.raises(ValueError, match="test_labels must have shape"):
        knn_accuracy(x, y, xt, yt[:3], 5, 0.1, 5)


def naive_weighted_mean(train, targets, test, k, temperature):
    """Σ w_j y_j / Σ w_j with w_j = exp(sim_j / T) over the k most cosine-similar rows, numpy float64 loop."""
    bank = train.numpy().astype(np.float64)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    y = targets.numpy().astype(np.float64).reshape(len(bank), -1)
    out = []
    for q in test.numpy().astype(np.float64):
        sims = bank @ (q / np.linalg.norm(q))  # [N]
        top = np.argsort(-sims, kind="stable")[:k]
        w = np.exp(sims[top] / temperature)  # no max-subtraction: fine for T >= 0.05
        out.append((w[:, None] * y[top]).sum(0) / w.sum())
    return np.stack(out)  # [M, T]


def regression_problem(n=300, m=80, d=12, outputs=3, seed=0):
    """Targets are a smooth function of the feature direction (what cosine kNN can recover) plus noise."""
    g = torch.Generator().manual_seed(seed)
    x, xt = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    proj = torch.randn(d, outputs, generator=g)
    y = torch.tanh(torch.nn.functional.normalize(x, dim=1) @ proj) + 0.1 * torch.randn(
        n, outputs, generator=g
    )
    yt = torch.tanh(torch.nn.functional.normalize(xt, dim=1) @ proj)
    return x, y, xt, yt


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (7, 0.5), *KNN_PRESETS.values(), (300, 1.0)])
def test_regression_matches_naive_loop(k, temperature):
    x, y, xt, _ = regression_problem()
    pred = knn_regression(x, y, xt, k=k, temperature=temperature)
    assert pred.shape == (80, 3) and pred.dtype == torch.float64
    np.testing.assert_allclose(
        pred.numpy(), naive_weighted_mean(x, y, xt, k, temperature), rtol=1e-5, atol=1e-6
    )
    # [N] targets give [M] predictions, equal to the first column of the multi-output case
    single = knn_regression(x, y[:, 0], xt, k=k, temperature=temperature)
    assert single.shape == (80,)
    torch.testing.assert_close(single, pred[:, 0], rtol=1e-12, atol=1e-12)


def test_regression_defaults_are_the_dino_preset_and_it_predicts():
    x, y, xt, yt = regression_problem(n=2000, seed=1)
    pred = knn_regression(x, y, xt)
    np.testing.assert_allclose(pred.numpy(), naive_weighted_mean(x, y, xt, 20, 0.07), rtol=1e-5, atol=1e-6)
    # far better than predicting the training mean
    assert (pred.float() - yt).square().mean() < 0.3 * (y.mean(0) - yt).square().mean()


def test_regression_temperature_limits():
    x, y, xt, _ = regression_problem(seed=2)
    _, idx = knn_search(x, xt, 15)
    # huge T: every weight is 1, the plain mean of the k neighbours
    torch.testing.assert_close(
        knn_regression(x, y, xt, 15, 1e9), y.double()[idx].mean(1), rtol=1e-6, atol=1e-9
    )
    # tiny T: exp(sim / T) overflows without the max-subtraction; the prediction is the nearest target
    tiny = knn_regression(x, y, xt, 15, 1e-8)
    assert torch.isfinite(tiny).all()
    torch.testing.assert_close(tiny, y.double()[idx[:, 0]], rtol=0, atol=1e-12)
    # and the weighting matters at the preset
    assert (knn_regression(x, y, xt, 15, 0.07) - y.double()[idx].mean(1)).abs().max() > 1e-3


def test_regression_k_larger_than_bank_is_clamped_with_a_warning():
    x, y, xt, _ = regression_problem(n=30, seed=3)
    with pytest.warns(UserWarning, match="exceeds the bank of 30"):
        pred = knn_regression(x, y, xt, 200, 0.1)
    torch.testing.assert_close(pred, knn_regression(x, y, xt, 30, 0.1))


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (10, 0.2), *KNN_PRESETS.values()])
def test_multilabel_scores_match_naive_loop(k, temperature):
    x, y, xt, _ = regression_problem(seed=4, outputs=6)
    labels = (y > 0.2).to(torch.int64)  # [N, 6] in {0, 1}
    scores = knn_multilabel_scores(x, labels, xt, k, temperature)
    assert scores.shape == (80, 6) and scores.min() >= 0 and scores.max() <= 1 + 1e-12
    np.testing.assert_allclose(
        scores.numpy(), naive_weighted_mean(x, labels, xt, k, temperature), rtol=1e-5, atol=1e-6
    )
    # bool and float labels give the same scores
    torch.testing.assert_close(knn_multilabel_scores(x, labels.bool(), xt, k, temperature), scores)
    torch.testing.assert_close(knn_multilabel_scores(x, labels.float(), xt, k, temperature), scores)


def test_multilabel_one_neighbour_copies_its_labels():
    x, y, xt, _ = regression_problem(seed=5, outputs=4)
    labels = (y > 0).float()
    _, idx = knn_search(x, xt, 1)
    assert torch.equal(knn_multilabel_scores(x, labels, xt, 1, 0.07), labels.double()[idx[:, 0]])


def test_regression_and_multilabel_errors():
    x, y, xt, _ = regression_problem()
    with pytest.raises(ValueError, match=r"train_targets must have shape \[300\] or \[300, T\]"):
        knn_regression(x, y[:10], xt)
    with pytest.raises(ValueError, match="train_targets holds NaN or inf; drop or impute"):
        knn_regression(x, torch.where(y > 1.0, float("nan"), y), xt)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        knn_regression(x, y, xt, 5, -1.0)
    with pytest.raises(ValueError, match="D=12 but test_feats have D=5"):
        knn_regression(x, y, xt[:, :5])
    with pytest.raises(ValueError, match="test_feats holds NaN"):
        knn_regression(x, y, xt * float("nan"))
    with pytest.raises(ValueError, match="must be 0 or 1; binarise them"):
        knn_multilabel_scores(x, y, xt, 5, 0.1)
    with pytest.raises(ValueError, match=r"must be \[N, L\].*use shape \[N, 1\]"):
        knn_multilabel_scores(x, (y[:, 0] > 0).float(), xt, 5, 0.1)
    with pytest.raises(ValueError, match="non-empty"):
        knn_multilabel_scores(x[:0], (y[:0] > 0).float(), xt, 5, 0.1)
