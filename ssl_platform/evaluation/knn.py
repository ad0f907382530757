"""Weighted k-nearest-neighbour evaluation on frozen features (InstDisc [0], DINO [1]).

Features are L2-normalised, the k most cosine-similar training samples are found exactly with
faiss (`IndexFlatIP`), and each neighbour votes `exp(sim / T)` for its class; the class with the
largest vote wins. The same weights serve the other task kinds: regression predicts the weighted
mean `Σ w_j y_j / Σ w_j` of the neighbours' targets, multi-label scores each label by the weighted
mean of the neighbours' 0/1 label vectors. The two presets are kept by name and must never be
mixed in one table: `k20_t0.07` (DINO, solo-learn) and `k200_t0.1` (InstDisc, lightly's default).

- [0]: Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination, 2018,
  https://arxiv.org/abs/1805.01978
- [1]: Caron et al., Emerging Properties in Self-Supervised Vision Transformers, 2021,
  https://arxiv.org/abs/2104.14294
"""

from __future__ import annotations

import warnings

import faiss
import numpy as np
import torch
from torch import Tensor

KNN_PRESETS: dict[str, tuple[int, float]] = {"k20_t0.07": (20, 0.07), "k200_t0.1": (200, 0.1)}


def _normalised(feats: Tensor, name: str) -> np.ndarray:
    """[N, D] tensor -> L2-normalised float32 C-contiguous numpy copy (what faiss requires)."""
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(f"knn: {name} must be a non-empty [N, D] tensor, got shape {tuple(feats.shape)}")
    x = np.ascontiguousarray(feats.detach().to("cpu", torch.float32).numpy()).copy()  # normalised in place
    if not np.isfinite(x).all():
        raise ValueError(f"knn: {name} holds NaN or inf; check the backbone's output")
    faiss.normalize_L2(x)
    return x


def _check_labels(labels: Tensor, num_classes: int, n: int, name: str) -> Tensor:
    labels = labels.detach().to("cpu", torch.int64)
    if labels.shape != (n,):
        raise ValueError(f"knn: {name} must have shape [{n}], got {tuple(labels.shape)}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"knn: {name} must lie in [0, {num_classes}) for num_classes={num_classes}, got "
            f"[{int(labels.min())}, {int(labels.max())}]; pass the dataset's number of classes"
        )
    return labels


def knn_search(train_feats: Tensor, test_feats: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact cosine top-k of every test sample among the training samples.

    Args:
        train_feats: [N, D] the bank (any scale; normalised here).
        test_feats: [M, D] the queries.
        k: neighbours per query; must be in [1, N].

    Returns:
        sims: [M, k] float32 cosine similarities, descending.
        indices: [M, k] int64 rows of `train_feats`.
    """
    bank, queries = _normalised(train_feats, "train_feats"), _normalised(test_feats, "test_feats")
    if bank.shape[1] != queries.shape[1]:
        raise ValueError(f"knn: train_feats have D={bank.shape[1]} but test_feats have D={queries.shape[1]}")
    if not 1 <= k <= len(bank):
        raise ValueError(f"knn: k must be in [1, {len(bank)}] (the bank size), got {k}")
    index = faiss.IndexFlatIP(bank.shape[1])  # flat = exact; inner product of unit vectors = cosine
    index.add(bank)
    sims, indices = index.search(queries, k)
    return torch.from_numpy(sims), torch.from_numpy(indices).to(torch.int64)


def _neighbour_weights(
    train_feats: Tensor, test_feats: Tensor, k: int, temperature: float
) -> tuple[Tensor, Tensor]:
    """Vote weights of the k nearest neighbours, k clamped to the bank size (with a warning).

    Returns:
        weights: [M, k] float64 `exp((sim - max sim) / T)`, indices: [M, k] int64 rows of `train_feats`.
    """
    if k > len(train_feats) > 0:  # an empty bank fails in knn_search
        warnings.warn(
            f"knn: k={k} exceeds the bank of {len(train_feats)} samples; using k={len(train_feats)}"
        )
        k = len(train_feats)
    sims, indices = knn_search(train_feats, test_feats, k)  # [M, k], [M, k]
    # exp((sim - max sim) / T) is exp(sim / T) times a positive per-query constant: the same argmax
    # and the same normalised weights, but it cannot overflow for tiny T (the top weight is exactly 1,
    # so a weighted mean never divides by 0). float64 keeps near-tied votes apart.
    return torch.exp((sims.double() - sims[:, :1].double()) / temperature), indices


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    k: int,
    temperature: float,
    num_classes: int,
) -> Tensor:
    """Weighted kNN predictions: each of the k nearest neighbours votes `exp(sim / T)` for its class.

    A k larger than the bank is clamped to the bank size (with a warning): the vote then covers
    the whole bank, which is what the preset means when there are fewer samples than k.
    Tied votes go to the smallest class index (torch.argmax takes the first maximum).

    Args:
        train_feats: [N, D] bank features.
        train_labels: [N] int labels in [0, num_classes).
        test_feats: [M, D] query features.
        k: number of neighbours.
        temperature: T > 0 of the vote weights; small T approaches a 1-NN vote.
        num_classes: C, the number of classes of the task.

    Returns:
        [M] int64 predicted labels.
    """
    if temperature <= 0:
        raise ValueError(f"knn: temperature must be > 0, got {temperature}")
    train_labels = _check_labels(train_labels, num_classes, len(train_feats), "train_labels")
    weights, indices = _neighbour_weights(train_feats, test_feats, k, temperature)  # [M, k], [M, k]
    votes = torch.zeros(len(weights), num_classes, dtype=torch.float64)
    votes.scatter_add_(1, train_labels[indices], weights)  # [M, C]
    return votes.argmax(dim=1)


def knn_accuracy(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    k: int,
    temperature: float,
    num_classes: int,
) -> float:
    """Top-1 accuracy in percent of `knn_predict` on the test set.

    Args:
        train_feats: [N, D]; train_labels: [N]; test_feats: [M, D]; test_labels: [M].
        k, temperature, num_classes: as in `knn_predict`.

    Returns:
        top-1 accuracy in [0, 100].
    """
    test_labels = _check_labels(test_labels, num_classes, len(test_feats), "test_labels")
    pred = knn_predict(train_feats, train_labels, test_feats, k, temperature, num_classes)
    return 100.0 * (pred == test_labels).double().mean().item()


def _weighted_mean(weights: Tensor, indices: Tensor, targets: Tensor) -> Tensor:
    """Σ_j w_j y_j / Σ_j w_j over each query's neighbours: [M, k] weights, [N, T] targets -> [M, T]."""
    total = torch.zeros(len(weights), targets.shape[1], dtype=torch.float64)
    for j in range(weights.shape[1]):  # one neighbour rank at a time: [M, T] memory, never [M, k, T]
        total += weights[:, j : j + 1] * targets[indices[:, j]]
    return total / weights.sum(dim=1, keepdim=True)


def _check_targets(targets: Tensor, n: int, name: str) -> Tensor:
    """[N] or [N, T] finite targets -> [N, T] float64 on the CPU."""
    if targets.ndim not in (1, 2) or targets.shape[0] != n:
        raise ValueError(f"knn: {name} must have shape [{n}] or [{n}, T], got {tuple(targets.shape)}")
    targets = targets.detach().to("cpu", torch.float64)
    if not torch.isfinite(targets).all():
        raise ValueError(f"knn: {name} holds NaN or inf; drop or impute those samples first")
    return targets if targets.ndim == 2 else targets[:, None]


def knn_regression(
    train_feats: Tensor,
    train_targets: Tensor,
    test_feats: Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> Tensor:
    """Weighted kNN regression: the mean of the neighbours' targets weighted by `exp(sim / T)`.

    The regression analogue of `knn_predict`'s vote, with the same presets and the same clamping
    of k to the bank size.

    Args:
        train_feats: [N, D] bank features.
        train_targets: [N] or [N, T] float targets.
        test_feats: [M, D] query features.
        k: number of neighbours.
        temperature: T > 0; small T approaches 1-NN regression, large T the plain k-neighbour mean.

    Returns:
        [M] (for [N] targets) or [M, T] float64 predictions.
    """
    if temperature <= 0:
        raise ValueError(f"knn: temperature must be > 0, got {temperature}")
    targets = _check_targets(train_targets, len(train_feats), "train_targets")  # [N, T]
    weights, indices = _neighbour_weights(train_feats, test_feats, k, temperature)
    pred = _weighted_mean(weights, indices, targets)  # [M, T]
    return pred if train_targets.ndim == 2 else pred[:, 0]


def knn_multilabel_scores(
    train_feats: Tensor,
    train_targets: Tensor,
    test_feats: Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> Tensor:
    """Weighted kNN multi-label scores: per label, the `exp(sim / T)`-weighted share of neighbours having it.

    Args:
        train_feats: [N, D] bank features.
        train_targets: [N, L] labels in {0, 1} (bool, int or float).
        test_feats: [M, D] query features.
        k, temperature: as in `knn_regression`.

    Returns:
        [M, L] float64 scores in [0, 1]; rank them with `multilabel.mean_average_precision`.
    """
    if temperature <= 0:
        raise ValueError(f"knn: temperature must be > 0, got {temperature}")
    if train_targets.ndim != 2:
        raise ValueError(
            f"knn: multi-label train_targets must be [N, L], got shape {tuple(train_targets.shape)}; "
            "for one label use shape [N, 1]"
        )
    targets = _check_targets(train_targets, len(train_feats), "train_targets")
    if not ((targets == 0) | (targets == 1)).all():
        raise ValueError(
            "knn: multi-label train_targets must be 0 or 1; binarise them (e.g. targets > 0) "
            "or use knn_regression for real-valued targets"
        )
    weights, indices = _neighbour_weights(train_feats, test_feats, k, temperature)
    return _weighted_mean(weights, indices, targets)


def preset(name: str) -> tuple[int, float]:
    """(k, temperature) of a named preset; unknown names fail listing the valid ones."""
    if name not in KNN_PRESETS:
        raise ValueError(f"unknown kNN preset {name!r}; valid presets: {', '.join(KNN_PRESETS)}")
    return KNN_PRESETS[name]
