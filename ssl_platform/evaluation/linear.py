"""Linear probe on cached features: L2-regularised multinomial logistic regression fitted with L-BFGS.

The Kornblith et al. [0] / SimCLR [1] (App. B.8) transfer protocol: frozen features without
augmentation, standardised with the training statistics; the regularisation strength λ is swept over
log-spaced values on a class-stratified validation split carved from train; the best λ is refitted on
train + validation and scored once on test.

Objective (the convention every result of this module uses):

    mean_i CE(W x_i + b, y_i) + (λ / 2) ||W||²       (the bias b is not regularised)

scikit-learn's `LogisticRegression` minimises `C Σ_i CE_i + ½||W||²`, the same problem for
`C = 1 / (λ n)` with n the number of training samples.

Labels may be any integers: the probe's classes are the distinct training labels (sorted), so labels
need not start at 0 or be contiguous. A test sample whose class never occurs in training cannot be
predicted and counts as an error.

The regression (`regression.py`) and multi-label (`multilabel.py`) probes follow the same protocol
with a random validation split; all three share `lbfgs.py` (the λ grid, standardisation, L-BFGS and
the λ sweep).

- [0]: Kornblith et al., Do Better ImageNet Models Transfer Better?, 2019, https://arxiv.org/abs/1805.08974
- [1]: Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, 2020,
  https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_platform.data.datasets.base import stratified_holdout
from ssl_platform.evaluation.lbfgs import LAMBDAS, check_lambdas, fit_lbfgs, standardise, sweep_lambdas


@dataclasses.dataclass
class LinearProbeResult:
    """What `linear_probe` measured.

    Attributes:
        best_lambda: the λ picked on the validation split (mean-loss convention, see the module docstring).
        val_accuracy: λ -> validation top-1 % of the model fitted on the rest of train.
        test_accuracy: top-1 % on test of the best λ refitted on train + validation.
        n_train: samples of the refit; sklearn's equivalent is `C = 1 / (best_lambda * n_train)`.
        classes: the original label of each probe output.
    """

    best_lambda: float
    val_accuracy: dict[float, float]
    test_accuracy: float
    n_train: int
    classes: list[int]


def stratified_split(labels: Tensor, val_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Split indices into fit and validation parts with the same class proportions.

    Every class keeps at least one sample in the fit part, so the validation classes are a subset
    of the fitted ones.

    Args:
        labels: [N] integer labels.
        val_fraction: share of each class that goes to validation, in (0, 1).
        seed: seed of the per-class shuffles.

    Returns:
        fit_idx: [N - V] int64, val_idx: [V] int64, both sorted.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"linear probe: val_fraction must be in (0, 1), got {val_fraction}")
    y = labels.cpu().numpy()
    fit_idx, val_idx = stratified_holdout(y, val_fraction, seed)
    if len(val_idx) == 0:
        raise ValueError(
            f"linear probe: val_fraction={val_fraction} of {len(y)} samples leaves no validation samples; "
            "raise val_fraction or use more labelled samples"
        )
    return torch.from_numpy(fit_idx), torch.from_numpy(val_idx)


def fit_logistic_regression(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    lam: float,
    max_iter: int = 1000,
    tol: float = 1e-4,
    init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Minimise mean CE + (λ/2)||W||² with full-batch L-BFGS (strong Wolfe line search).

    Args:
        x: [N, D] features (standardised by the caller), float64 recommended.
        y: [N] int64 labels in [0, num_classes).
        num_classes: C.
        lam: λ >= 0, the L2 strength on W (not on b).
        max_iter: L-BFGS iterations at most.
        tol: stop when the largest gradient entry is below this (scikit-learn's `tol` means the same).
        init: (weight [D, C], bias [C]) to warm-start from; zeros otherwise.

    Returns:
        weight: [D, C], bias: [C], detached, on x's device and dtype.
    """
    return fit_lbfgs(x, num_classes, lambda logits: F.cross_entropy(logits, y), lam, max_iter, tol, init)


def _accuracy(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor) -> float:
    """Top-1 % of argmax(x W + b) against `y` ([N]; -1 marks a class the probe does not know)."""
    pred = (x @ weight + bias).argmax(dim=1)
    return 100.0 * (pred == y).double().mean().item()


def _encode(labels: Tensor, classes: Tensor) -> Tensor:
    """Original labels -> index into `classes`; labels absent from `classes` -> -1."""
    pos = torch.searchsorted(classes, labels).clamp(max=len(classes) - 1)
    return torch.where(classes[pos] == labels, pos, torch.full_like(pos, -1))


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    lambdas: tuple[float, ...] | list[float] = LAMBDAS,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
    tol: float = 1e-4,
    device: str | torch.device = "cpu",
    val: tuple[Tensor, Tensor] | None = None,
) -> LinearProbeResult:
    """Sweep λ on a stratified validation split, refit on all of train, report test top-1.

    With `val` (a task's own validation split), λ is swept on it instead and the refit uses
    train + val, as the Kornblith protocol does for datasets that ship a validation split.

    The sweep runs from the largest λ down, each fit warm-started from the previous one (the
    regularisation path is smooth, so this saves most iterations). Ties in validation accuracy go to
    the larger λ. Computation is float64: cached features are small, and it keeps L-BFGS's line
    search stable when the weights grow at small λ.

    Args:
        train_feats: [N, D] features; train_labels: [N] integer labels (any values).
        test_feats: [M, D]; test_labels: [M].
        lambdas: λ values to sweep (mean-loss convention).
        val_fraction: share of each class held out for the sweep.
        seed: seed of the validation split.
        max_iter: L-BFGS iterations per fit.
        tol: L-BFGS gradient tolerance (the default 1e-4 is scikit-learn's, in the same mean-loss units).
        device: where to fit.
        val: optional (feats [V, D], labels [V]); `val_fraction` is then unused.

    Returns:
        LinearProbeResult.
    """
    n_own = len(train_feats)
    if val is not None:
        train_feats, train_labels = torch.cat([train_feats, val[0]]), torch.cat([train_labels, val[1]])
    check_lambdas(lambdas)
    x_train = train_feats.detach().to(device, torch.float64)  # [N, D]
    x_test = test_feats.detach().to(device, torch.float64)  # [M, D]
    train_labels = train_labels.detach().to(device, torch.int64)
    classes = torch.unique(train_labels)  # sorted
    if len(classes) < 2:
        raise ValueError(
            f"linear probe: training labels hold {len(classes)} class(es); at least 2 are needed"
        )
    y_train, y_test = _encode(train_labels, classes), _encode(test_labels.to(device, torch.int64), classes)
    if val is None:
        fit_idx, val_idx = (i.to(device) for i in stratified_split(train_labels, val_fraction, seed))
    else:
        fit_idx, val_idx = torch.arange(n_own, device=device), torch.arange(n_own, len(train_labels), device=device)
    x_fit, x_val = standardise(x_train[fit_idx], x_train[val_idx])

    def fit(lam: float, init: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        return fit_logistic_regression(x_fit, y_train[fit_idx], len(classes), lam, max_iter, tol, init=init)

    val_accuracy, best_lambda, best_params = sweep_lambdas(
        lambdas, fit, lambda params: _accuracy(x_val, y_train[val_idx], *params), higher_is_better=True
    )
    x_all, x_test = standardise(x_train, x_test)
    params = fit_logistic_regression(x_all, y_train, len(classes), best_lambda, max_iter, tol, init=best_params)
    return LinearProbeResult(
        best_lambda=best_lambda,
        val_accuracy=val_accuracy,
        test_accuracy=_accuracy(x_test, y_test, *params),
        n_train=len(y_train),
        classes=classes.tolist(),
    )
