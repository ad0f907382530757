"""Fitting L2-regularised linear probes on cached features: what the logistic (`linear.py`), ridge
(`regression.py`) and multi-label (`multilabel.py`) probes share.

Every probe follows one protocol (Kornblith et al. [0]): standardise the features with the training
statistics, sweep λ over `LAMBDAS` on a validation split carved from train, refit the best λ on all of
train and score the test set once. This module holds the pieces of that protocol which do not depend
on the target: the λ grid, standardisation, a random validation split (for targets without classes),
the input checks, full-batch L-BFGS on `data_loss(x W + b) + (λ/2)||W||²`, and the λ sweep along the
regularisation path (largest λ first, each fit warm-starting the next).

- [0]: Kornblith et al., Do Better ImageNet Models Transfer Better?, 2019, https://arxiv.org/abs/1805.08974
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

# 9 values, one per decade of [1e-6, 1e2]: the paper's 45 values in [1e-6, 1e5] cost 5x more for
# little change on small sets; pass `lambdas` for the full sweep.
LAMBDAS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-6, 2, 9))

Params = tuple[Tensor, Tensor]  # (weight [D, K], bias [K])


def standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Scale every feature to zero mean, unit variance with `train`'s statistics.

    Args:
        train: [N, D] the statistics come from here only (no test leakage).
        *others: [M, D] tensors scaled the same way.

    Returns:
        `[train, *others]` standardised. Constant features (std 0) are only centred.
    """
    mean = train.mean(dim=0)  # [D]
    std = train.std(dim=0, unbiased=False)  # [D], sklearn's StandardScaler convention
    std = torch.where(std > 0, std, torch.ones_like(std))
    return [(x - mean) / std for x in (train, *others)]


def random_split(n: int, val_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Split `range(n)` at random into fit and validation indices (for targets without classes).

    Returns:
        fit_idx: [n - V] int64, val_idx: [V] int64 with V = round(val_fraction * n), both sorted.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"linear probe: val_fraction must be in (0, 1), got {val_fraction}")
    n_val = round(val_fraction * n)
    if not 0 < n_val < n:
        raise ValueError(
            f"linear probe: val_fraction={val_fraction} of {n} samples leaves no validation samples or "
            "nothing to fit; change val_fraction or use more labelled samples"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return torch.from_numpy(np.sort(perm[n_val:])), torch.from_numpy(np.sort(perm[:n_val]))


def check_lambdas(lambdas: Sequence[float]) -> None:
    """A sweep needs at least one λ."""
    if len(lambdas) == 0:
        raise ValueError("linear probe: lambdas is empty; give at least one λ (e.g. the default LAMBDAS)")


def check_probe_inputs(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, probe: str, device: str | torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validate a probe's inputs; return them as float64 on `device`, targets as [N, T] and [M, T].

    Args:
        train_x: [N, D]; train_y: [N] or [N, T]. test_x: [M, D]; test_y: [M] or [M, T].
        probe: the probe's name, for the messages.
    """
    if train_x.ndim != 2 or test_x.ndim != 2 or len(train_x) == 0 or len(test_x) == 0:
        raise ValueError(
            f"{probe}: train_x and test_x must be non-empty [N, D] tensors, got shapes "
            f"{tuple(train_x.shape)} and {tuple(test_x.shape)}"
        )
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"{probe}: train_x have D={train_x.shape[1]} but test_x have D={test_x.shape[1]}")
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if y.ndim not in (1, 2) or len(y) != len(x):
            raise ValueError(
                f"{probe}: {name}_y must be [{len(x)}] or [{len(x)}, T] to match {name}_x, "
                f"got {tuple(y.shape)}"
            )
    if train_y.shape[1:] != test_y.shape[1:]:
        raise ValueError(f"{probe}: train_y is {tuple(train_y.shape)} but test_y is {tuple(test_y.shape)}")
    out = [v.detach().to(device, torch.float64) for v in (train_x, train_y, test_x, test_y)]
    for name, v in zip(("train_x", "train_y", "test_x", "test_y"), out):
        if not torch.isfinite(v).all():
            raise ValueError(f"{probe}: {name} holds NaN or inf; drop or impute those samples first")
    x, y, xt, yt = out
    return x, y.reshape(len(x), -1), xt, yt.reshape(len(xt), -1)


def fit_lbfgs(
    x: Tensor,
    num_outputs: int,
    data_loss: Callable[[Tensor], Tensor],
    lam: float,
    max_iter: int = 1000,
    tol: float = 1e-4,
    init: Params | None = None,
) -> Params:
    """Minimise data_loss(x W + b) + (λ/2)||W||² over W [D, num_outputs] and b with full-batch L-BFGS.

    Args:
        x: [N, D] features (standardised by the caller), float64 recommended.
        num_outputs: K, the columns of W.
        data_loss: logits [N, K] -> 0-d mean loss over the samples (it closes over the targets).
        lam: λ >= 0, the L2 strength on W (not on b).
        max_iter: L-BFGS iterations at most.
        tol: stop when the largest gradient entry is below this (scikit-learn's `tol` means the same).
        init: (weight [D, K], bias [K]) to warm-start from; zeros otherwise.

    Returns:
        weight: [D, K], bias: [K], detached, on x's device and dtype.
    """
    if lam < 0:
        raise ValueError(f"linear probe: lambda must be >= 0, got {lam}")
    shape = (x.shape[1], num_outputs)
    if init is None:
        weight, bias = x.new_zeros(shape), x.new_zeros(num_outputs)
    else:
        weight, bias = init[0].to(x).clone(), init[1].to(x).clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    # column-major x: autograd's backward multiplies x.T by the output gradient, and with x stored
    # transposed that product reads contiguous memory (2.5x faster per evaluation on a CPU, measured
    # at 60000 x 256 in float64); the forward product is as fast either way
    x = x.T.contiguous().T
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = data_loss(x @ weight + bias) + 0.5 * lam * weight.square().sum()
        loss.backward()
        return loss

    # one step runs the whole optimisation (up to max_iter iterations) on the full batch
    opt.step(closure)
    return weight.detach(), bias.detach()


def sweep_lambdas(
    lambdas: Sequence[float],
    fit: Callable[[float, Params | None], Params],
    score: Callable[[Params], float],
    higher_is_better: bool,
) -> tuple[dict[float, float], float, Params]:
    """Fit every λ from the largest down (each warm-starting the next), score it; ties go to the larger λ.

    The regularisation path is smooth, so the warm start saves most iterations.

    Args:
        lambdas: the λ values (any order).
        fit: (λ, previous fit's params or None) -> params.
        score: params -> the validation score.
        higher_is_better: accuracy and mAP (True) or an error such as RMSE (False).

    Returns:
        λ -> score, the best λ, and its fitted (weight, bias).
    """
    check_lambdas(lambdas)
    scores, params, best = {}, None, None
    sign = 1.0 if higher_is_better else -1.0
    for lam in sorted((float(v) for v in lambdas), reverse=True):
        params = fit(lam, params)
        scores[lam] = score(params)
        if best is None or sign * scores[lam] > sign * scores[best[0]]:
            best = (lam, params)
    return scores, best[0], best[1]
