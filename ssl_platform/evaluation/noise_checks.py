"""Argument checks shared by the label-noise generators (`noise.py`, `noise_single.py`,
`noise_multilabel.py`): every bad input raises a ValueError that says what was expected, and every
generator draws from a private CPU generator made here, never from the global RNG.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor


def check_labels(labels: Tensor, num_classes: int | None) -> Tensor:
    """Validate labels ([N] integers in [0, num_classes)) and return a CPU int64 copy."""
    if not is_label_tensor(labels):
        raise ValueError(f"label noise: labels must be a 1-D integer tensor [N], got {describe(labels)}")
    if num_classes is not None and (as_int(num_classes) is None or num_classes < 2):
        raise ValueError(f"label noise: num_classes must be an int >= 2, got {num_classes!r}")
    y = labels.detach().to("cpu", torch.int64, copy=True)
    if len(y) and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        where = ">= 0" if num_classes is None else f"in [0, {num_classes})"
        raise ValueError(
            f"label noise: labels must be {where}, found values in [{y.min()}, {y.max()}]; "
            "pass the right num_classes or remap the labels to 0..C-1"
        )
    return y


def check_multilabel(labels: Tensor) -> Tensor:
    """[N, K] 0/1 targets -> a bool copy on the CPU; anything else raises saying what was expected."""
    if not isinstance(labels, Tensor) or labels.ndim != 2 or labels.is_complex():
        raise ValueError(f"label noise: multi-label kinds need [N, K] 0/1 targets, got {describe(labels)}")
    y = labels.detach().cpu()
    if not ((y == 0) | (y == 1)).all():
        raise ValueError("label noise: multi-label targets must be 0 or 1 (label absent / present); got other values")
    return y.bool()


def check_inputs(inputs: Tensor, n: int) -> Tensor:
    """Validate instance-noise inputs ([N, ...] real values, all finite) and return them as [N, d]."""
    if not isinstance(inputs, Tensor) or inputs.ndim < 2 or inputs.dtype == torch.bool or inputs.is_complex():
        raise ValueError(
            f"label noise: inputs must be a real tensor [N, d] (one row per label), got {describe(inputs)}"
        )
    if inputs.shape[0] != n:
        raise ValueError(
            f"label noise: inputs has {inputs.shape[0]} rows but there are {n} labels; pass one row per label"
        )
    x = inputs.detach().flatten(1)  # [N, d]
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError("label noise: inputs contains NaN or inf; pass finite values")
    return x


def check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"label noise: rate must be a fraction in [0, 1] (not a percentage), got {rate!r}")
    return float(rate)


def as_int(value: object, parse_str: bool = False) -> int | None:
    """value as an int if it is an integer (bools excluded) or, with parse_str, a str of one; else None."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if parse_str and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def generator(seed: int) -> torch.Generator:
    """A private CPU generator, so the global RNG is neither used nor advanced."""
    if as_int(seed) is None:
        raise ValueError(f"label noise: seed must be an int, got {seed!r}")
    try:
        return torch.Generator().manual_seed(int(seed))
    except (RuntimeError, ValueError) as err:  # outside what torch can seed, e.g. 2**64
        raise ValueError(f"label noise: seed {seed} cannot seed a torch.Generator ({err})") from None


def is_label_tensor(value: object) -> bool:
    """A 1-D tensor of an integer dtype (not bool)."""
    if not isinstance(value, Tensor) or value.ndim != 1:
        return False
    return not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)


def describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"
