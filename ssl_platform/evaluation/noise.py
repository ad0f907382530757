"""Synthetic label noise for the training labels of an evaluation: symmetric, asymmetric, pair-flip, instance,
and for multi-label targets mixed (flips) and subtractive (missing labels).

Every function is pure: labels in, new labels out, the input never modified, and all randomness drawn from
a `torch.Generator` seeded with `seed` (never the global RNG), so (labels, kind, rate, seed) names the noisy
labels exactly, and `labels_sha256` fingerprints them for a results record. Only training labels are
corrupted; the caller keeps test labels clean.

`corrupt` is the one entry point: it picks the kind's generator and records what it did (`NoisyLabels`).
The generators, their conventions and references live by target type: single labels in
`noise_single.py` (symmetric "exclusive" and "inclusive", asymmetric, pair-flip, instance-dependent),
multi-label targets in `noise_multilabel.py` (mixed, subtractive). For every kind, `realised` is the
fraction of samples whose label (set) changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

import torch
from torch import Tensor

from ssl_platform.evaluation.noise_checks import (
    check_labels,
    check_multilabel,
    check_rate,
    describe,
    generator,
    is_label_tensor,
)
from ssl_platform.evaluation.noise_multilabel import (
    MULTILABEL_KINDS,
    multilabel_mixed,
    multilabel_subtractive,
)
from ssl_platform.evaluation.noise_single import (
    CIFAR10_ASYMMETRIC,
    asymmetric,
    instance_dependent,
    normalise_mapping,
    pair_flip,
    symmetric,
)

KINDS = ("none", "symmetric", "asymmetric", "pairflip", "instance", "multilabel_mixed", "multilabel_subtractive")


@dataclasses.dataclass
class NoisyLabels:
    """Noisy training labels and what produced them.

    Attributes:
        labels: [N] int64, the corrupted labels ([N, K] in the input's dtype for multi-label targets).
        kind: one of `KINDS`.
        rate: the nominal rate (0.0 for kind "none").
        realised: the fraction of samples whose label changed.
        seed: the seed of the generator that drew the noise.
        sha256: `labels_sha256(labels)`, so a result can name the exact labels it was trained on.
    """

    labels: Tensor
    kind: str
    rate: float
    realised: float
    seed: int
    sha256: str



def realised_rate(clean: Tensor, noisy: Tensor) -> float:
    """Fraction of samples whose label changed; clean, noisy: [N] or [N, K] (a sample changes when any of its
    K entries does; 0.0 when N = 0)."""
    if clean.shape != noisy.shape:
        raise ValueError(
            f"label noise: clean {tuple(clean.shape)} and noisy {tuple(noisy.shape)} labels differ in shape; "
            "pass the labels of the same samples before and after corruption"
        )
    if clean.numel() == 0:
        return 0.0
    changed = clean.cpu() != noisy.cpu()
    return (changed.any(1) if changed.ndim == 2 else changed).double().mean().item()


def labels_sha256(labels: Tensor) -> str:
    """sha256 hex digest of labels as little-endian int64 bytes, whatever the dtype/device: [N] integers, or
    [N, K] 0/1 multi-label targets (then the shape is hashed first, so no two shapes share a digest)."""
    if labels.ndim == 2:
        data = check_multilabel(labels).to(torch.int64).numpy()
        return hashlib.sha256(f"{data.shape[0]}x{data.shape[1]}:".encode() + data.astype("<i8").tobytes()).hexdigest()
    if not is_label_tensor(labels):
        raise ValueError(f"label noise: labels_sha256 needs 1-D integer labels [N], got {describe(labels)}")
    data = labels.detach().to("cpu", torch.int64).numpy()
    return hashlib.sha256(data.astype("<i8").tobytes()).hexdigest()


def corrupt(
    labels: Tensor,
    kind: str,
    rate: float,
    num_classes: int,
    seed: int,
    *,
    convention: str = "exclusive",
    mapping: Mapping | None = None,
    inputs: Tensor | None = None,
) -> NoisyLabels:
    """Corrupt training labels with one of `KINDS` and record what was done.

    Arguments a kind does not use are ignored (`convention` for "symmetric", `mapping` for "asymmetric",
    `inputs` for "instance", `num_classes` for the multi-label kinds), so one sweep can pass them all. Kind
    "none" returns a copy of the labels and records rate 0.0 whatever `rate` says.

    Args:
        labels: [N] integer labels in [0, num_classes), or [N, K] 0/1 targets for `MULTILABEL_KINDS` (and "none").
        kind: one of `KINDS`.
        rate: nominal rate in [0, 1].
        num_classes: C.
        seed: seed of the generator.
        convention: symmetric convention, one of `SYMMETRIC_CONVENTIONS`.
        mapping: asymmetric source -> target map; None means `CIFAR10_ASYMMETRIC`.
        inputs: [N, d] values the instance-dependent noise depends on.

    Returns:
        `NoisyLabels` with [N] int64 labels on labels' device.
    """
    if kind not in KINDS:
        raise ValueError(f"label noise: unknown kind {kind!r}; use one of {KINDS}")
    rate = check_rate(rate)
    generator(seed)  # validates the seed for kind "none" too
    if labels.ndim == 2 and kind not in ("none", *MULTILABEL_KINDS):
        raise ValueError(f"label noise: kind {kind!r} is for single labels [N]; [N, K] multi-label targets take "
                         f"one of {MULTILABEL_KINDS}")
    if kind == "none":
        # single labels come back int64, multi-label targets in their own dtype (as the noisy kinds give them)
        clean = check_multilabel(labels).to(labels.dtype) if labels.ndim == 2 else check_labels(labels, num_classes)
        noisy, rate = clean.to(labels.device), 0.0
    elif kind == "multilabel_mixed":
        noisy = multilabel_mixed(labels, rate, seed)
    elif kind == "multilabel_subtractive":
        noisy = multilabel_subtractive(labels, rate, seed)
    elif kind == "symmetric":
        noisy = symmetric(labels, rate, num_classes, seed, convention=convention)
    elif kind == "asymmetric":
        mapping = CIFAR10_ASYMMETRIC if mapping is None else mapping
        normalise_mapping(mapping, num_classes)  # sources and targets must be classes of this problem
        check_labels(labels, num_classes)
        noisy = asymmetric(labels, rate, mapping, seed)
    elif kind == "pairflip":
        noisy = pair_flip(labels, rate, num_classes, seed)
    else:
        if inputs is None:
            raise ValueError(
                "label noise: kind 'instance' needs inputs; pass inputs= as an [N, d] tensor "
                "(flattened pixels or fixed features, one row per label)"
            )
        noisy = instance_dependent(labels, rate, inputs, num_classes, seed)
    return NoisyLabels(noisy, kind, rate, realised_rate(labels, noisy), int(seed), labels_sha256(noisy))
