"""Weighted k-nearest-neighbour classification on frozen features (InstDisc [0], DINO [1]).

Features are L2-normalised, the k most cosine-similar training samples are found exactly with
faiss (`IndexFlatIP`), and each neighbour votes `exp(sim / T)` for its class; the class with the
largest vote wins. The two presets are kept by name and must never be mixed in one table:
`k20_t0.07` (DINO, solo-learn) and `k200_t0.1` (InstDisc, lightly's default).

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
    if k > len(train_feats):
        warnings.warn(
            f"knn: k={k} exceeds the bank of {len(train_feats)} samples; using k={len(train_feats)}"
        )
        k = len(train_feats)
    sims, indices = knn_search(train_feats, test_feats, k)  # [M, k], [M, k]
    # exp((sim - max sim) / T) is exp(sim / T) times a positive per-query constant: the same argmax,
    # but it cannot overflow for tiny T. float64 keeps near-tied votes apart.
    weights = torch.exp((sims.double() - sims[:, :1].double()) / temperature)  # [M, k]
    votes = torch.zeros(len(sims), num_classes, dtype=torch.float64)
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


def preset(name: str) -> tuple[int, float]:
    """(k, temperature) of a named preset; unknown names fail listing the valid ones."""
    if name not in KNN_PRESETS:
        raise ValueError(f"unknown kNN preset {name!r}; valid presets: {', '.join(KNN_PRESETS)}")
    return KNN_PRESETS[name]
