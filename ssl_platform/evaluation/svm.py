"""The `svm` protocol: a support vector classifier on cached features, C chosen by cross-validation.

Graph-level self-supervised papers (InfoGraph, GraphCL, GraphMAE [0]) score pooled graph embeddings
with scikit-learn's `SVC` (GraphMAE: the RBF kernel, C in 1e-3..10 chosen by an inner 5-fold search),
and report the mean accuracy of an outer 10-fold cross-validation over the whole data set. The harness keeps its test
split held out instead (every protocol is scored on the same test graphs, and label noise corrupts
training labels only), so here:

1. features are standardised (fitted on the training rows; sum-pooled graph embeddings span orders
   of magnitude and SVC is not scale invariant),
2. for every C, the mean accuracy over `folds` stratified folds of the training rows is computed
   (`cv_top1`, the paper's kind of number, on the training split),
3. the best C (the smallest of ties) is refitted on all training rows and scored once on test (`top1`).

The defaults are GraphMAE's search (RBF, five C values, 5 folds); step 1 is ours (GraphMAE feeds
the raw embeddings). A linear kernel is offered, but libsvm's linear SVC converges slowly at large C.

- [0]: Hou et al., GraphMAE: Self-Supervised Masked Graph Autoencoders, KDD 2022,
  https://arxiv.org/abs/2205.10803 (graph classification protocol, Section 4.2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch import Tensor

CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
KERNELS = ("linear", "rbf")


@dataclasses.dataclass
class SVMResult:
    test_accuracy: float  # top-1 % on the test rows, with the selected C
    cv_accuracy: float  # top-1 % of the selected C, mean over the training folds
    best_c: float
    folds: int  # the folds used (fewer than asked when the smallest class has fewer rows)


def svm_probe(x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, *, cs: Sequence[float] = CS,
              kernel: str = "rbf", folds: int = 5, seed: int = 0) -> SVMResult:
    """Select C by stratified k-fold cross-validation on (x, y), refit, score on the test rows.

    Args:
        x: [N, D] training features; y: [N] int labels (possibly noisy).
        x_test: [M, D]; y_test: [M] clean labels.
        cs: the C values searched.
        kernel: "linear" or "rbf" (SVC's; gamma "scale").
        folds: stratified folds; lowered to the smallest class's count when that is smaller.
        seed: shuffles the folds.

    Raises:
        ValueError: shapes that do not match, an unknown kernel, no C, fewer than two classes, or a
            class with a single training row (no fold split can hold it out and keep it in).
    """
    if kernel not in KERNELS:
        raise ValueError(f"svm: kernel must be one of {list(KERNELS)}, got {kernel!r}")
    if not cs or any(float(c) <= 0 for c in cs):
        raise ValueError(f"svm: cs must list positive C values, got {list(cs)}")
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or x_test.ndim != 2 or len(x_test) != len(y_test) \
            or x_test.shape[1] != x.shape[1]:
        raise ValueError(f"svm: features [N, D] with labels [N] expected, got {tuple(x.shape)} / {tuple(y.shape)} "
                         f"and {tuple(x_test.shape)} / {tuple(y_test.shape)}")
    labels = y.cpu().numpy()
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2:
        raise ValueError("svm: the training labels hold a single class; an SVM needs at least two")
    folds = min(int(folds), int(counts.min()))
    if folds < 2:
        raise ValueError(f"svm: a class has a single training row, so no stratified split can hold it out; "
                         f"use more labels (label_fractions) or another protocol (class counts: {counts.tolist()})")
    search = GridSearchCV(
        make_pipeline(StandardScaler(), SVC(kernel=kernel)),
        {"svc__C": [float(c) for c in sorted(cs)]},
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        scoring="accuracy",
        refit=True,
    )
    search.fit(x.detach().cpu().double().numpy(), labels)
    pred = search.predict(x_test.detach().cpu().double().numpy())
    return SVMResult(
        test_accuracy=100.0 * float(np.mean(pred == y_test.cpu().numpy())),
        cv_accuracy=100.0 * float(search.best_score_),
        best_c=float(search.best_params_["svc__C"]),
        folds=folds,
    )
