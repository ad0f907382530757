"""Synthetic label noise for the training labels of an evaluation: symmetric, asymmetric, pair-flip, instance,
and for multi-label targets mixed (flips) and subtractive (missing labels).

Every function is pure: labels in, new labels out, the input never modified, and all randomness drawn from
a `torch.Generator` seeded with `seed` (never the global RNG), so (labels, kind, rate, seed) names the noisy
labels exactly, and `labels_sha256` fingerprints them for a results record. Only training labels are
corrupted; the caller keeps test labels clean. Below, round() is Python's (half to even), C the number of
classes, N the number of samples and n_c the number of samples of class c.

- symmetric, "exclusive" (Co-teaching [0]): exactly round(rate·N) samples, chosen without replacement, get
  a label drawn uniformly from the C-1 *other* classes. This is the default because its realised rate
  equals the nominal one, so a curve against nominal noise reads the same against realised noise.
- symmetric, "inclusive" (ELR [1], DivideMix [2]): round(rate·N) samples get a label drawn uniformly from
  all C classes, the true one included, so only ≈ rate·(C-1)/C of the labels change (CIFAR-10 "80%" leaves
  72% wrong); use it to compare with numbers reported under those papers' convention.
- asymmetric (ELR [1]'s convention; the CIFAR-10 map is Patrini et al. [3]'s): each source class s of
  `mapping` sends exactly round(rate·n_s) of its samples, chosen without replacement, to mapping[s]; other
  classes are never changed. With `CIFAR10_ASYMMETRIC` half of the classes are sources, so the realised
  rate is ≈ rate/2. ELR's loop flips ceil(rate·n_s); DivideMix instead maps a fraction rate of all samples.
- pair-flip (Co-teaching [0]): T_ii = 1-ε, T_i,(i+1) mod C = ε, realised as exactly round(ε·n_c) samples of
  each class c moved to class (c+1) mod C rather than one Bernoulli draw per sample as in [0].
- instance-dependent (Xia et al. [4], Alg. 2 of the paper and `get_instance_noisy_label` of its public
  code): a flip rate q_n ~ N(rate, 0.1²) truncated to [0, 1] per sample; one projection W_c ∈ R^[d, C] per
  true class c, with N(0, 1) entries; then s = x̂_n W_(y_n), s[y_n] = -inf, p = q_n·softmax(s),
  p[y_n] = 1 - q_n and ỹ_n ~ p. The realised rate is ≈ E[q_n]: rate itself for rate in [0.3, 0.7], but the
  truncation pulls it towards 0.5 near the ends (0.1 -> 0.129, 0.2 -> 0.206, 0.9 -> 0.871).
  One deliberate change: the public code multiplies raw 0-255 pixels, so the logits have a std in the
  thousands and the softmax is in effect an argmax (a sample can only flip to the one class its pixels
  pick). Here each row is first rescaled to unit root-mean-square, x̂ = x / rms(x), so the noise does not
  depend on the scale of `inputs` while the logits keep a std of √d: the same near-argmax regime once d is
  in the hundreds. Draw order: N uniforms for q (inverse CDF), N for ỹ (inverse CDF of p), W_0..W_(C-1).

Multi-label targets ([N, K] 0/1, K labels; `MULTILABEL_KINDS`):
- multilabel_mixed (RCML, Aksoy et al. [5]): exactly round(rate·N) samples, chosen without replacement,
  each have max(1, round(rate·K)) of their K entries, chosen without replacement, flipped: wrong labels
  added and true ones removed at once (RCML truncates rate·K instead of rounding it).
- multilabel_subtractive (Burgert et al. [6]'s subtractive noise, i.e. missing annotations): exactly
  round(rate·P) of the P present labels of the whole set, chosen without replacement, are removed; no
  label is added. A sample may end up with no label.
For both, `realised` is the fraction of samples whose label set changed, as for single labels.

- [0]: Han et al., Co-teaching: Robust Training of Deep Neural Networks with Extremely Noisy Labels, 2018,
  https://arxiv.org/abs/1804.06872
- [1]: Liu et al., Early-Learning Regularization Prevents Memorization of Noisy Labels, 2020,
  https://arxiv.org/abs/2007.00151
- [2]: Li et al., DivideMix: Learning with Noisy Labels as Semi-supervised Learning, 2020,
  https://arxiv.org/abs/2002.07394
- [3]: Patrini et al., Making Deep Neural Networks Robust to Label Noise: a Loss Correction Approach, 2017,
  https://arxiv.org/abs/1609.03683
- [4]: Xia et al., Part-dependent Label Noise: Towards Instance-dependent Label Noise, 2020,
  https://arxiv.org/abs/2006.07836
- [5]: Aksoy et al., Multi-Label Noise Robust Collaborative Learning for Remote Sensing Image
  Classification, IEEE TNNLS 2022 (code: github.com/hoanganhloan172/RCML)
- [6]: Burgert et al., On the Effects of Different Types of Label Noise in Multi-Label Remote Sensing
  Image Classification, IEEE TGRS 2022
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
from collections.abc import Mapping

import torch
from torch import Tensor

KINDS = ("none", "symmetric", "asymmetric", "pairflip", "instance", "multilabel_mixed", "multilabel_subtractive")
# the kinds for [N, K] 0/1 multi-label targets ("none" takes either)
MULTILABEL_KINDS = ("multilabel_mixed", "multilabel_subtractive")
SYMMETRIC_CONVENTIONS = ("exclusive", "inclusive")
# truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog [3]
CIFAR10_ASYMMETRIC: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

_FLIP_RATE_STD = 0.1  # std of the per-sample flip rate q_n of [4]


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


def symmetric(
    labels: Tensor, rate: float, num_classes: int, seed: int, convention: str = "exclusive"
) -> Tensor:
    """Relabel exactly round(rate·N) random samples uniformly (see the module docstring for the conventions).

    Args:
        labels: [N] integer labels in [0, num_classes).
        rate: nominal noise rate in [0, 1].
        num_classes: C >= 2.
        seed: seed of the generator.
        convention: "exclusive" (new label != true label, realised = rate) or "inclusive" (new label uniform
            over all C classes, realised ≈ rate·(C-1)/C).

    Returns:
        [N] int64 noisy labels, on labels' device.
    """
    if convention not in SYMMETRIC_CONVENTIONS:
        raise ValueError(
            f"label noise: unknown symmetric convention {convention!r}; use one of {SYMMETRIC_CONVENTIONS}"
        )
    y = _check_labels(labels, num_classes)
    rate = _check_rate(rate)
    gen = _generator(seed)
    noisy = y.clone()
    n_noisy = round(rate * len(y))
    chosen = torch.randperm(len(y), generator=gen)[:n_noisy]  # [n_noisy], without replacement
    if convention == "exclusive":
        # an offset uniform in 1..C-1 is a label uniform over the C-1 other classes
        offset = torch.randint(1, num_classes, (n_noisy,), generator=gen)
        noisy[chosen] = (y[chosen] + offset) % num_classes
    else:
        noisy[chosen] = torch.randint(0, num_classes, (n_noisy,), generator=gen)
    return noisy.to(labels.device)


def asymmetric(labels: Tensor, rate: float, mapping: Mapping, seed: int) -> Tensor:
    """Send exactly round(rate·n_s) samples of each source class s to mapping[s] (ELR's convention [1]).

    Sources are chosen from the clean labels, so a swap such as cat <-> dog moves each way independently,
    and they are visited in sorted order, so the noise does not depend on the order of the mapping's keys.

    Args:
        labels: [N] integer labels >= 0.
        rate: nominal rate in [0, 1], per source class.
        mapping: source class -> target class; int or str keys and values (YAML gives str keys).
        seed: seed of the generator.

    Returns:
        [N] int64 noisy labels, on labels' device.
    """
    pairs = _normalise_mapping(mapping)
    y = _check_labels(labels, None)
    rate = _check_rate(rate)
    return _move_per_class(y, rate, pairs, _generator(seed)).to(labels.device)


def pair_flip(labels: Tensor, rate: float, num_classes: int, seed: int) -> Tensor:
    """Move exactly round(rate·n_c) samples of each class c to class (c+1) mod C (Co-teaching's pair flip).

    Args:
        labels: [N] integer labels in [0, num_classes).
        rate: nominal rate in [0, 1].
        num_classes: C >= 2.
        seed: seed of the generator.

    Returns:
        [N] int64 noisy labels, on labels' device.
    """
    y = _check_labels(labels, num_classes)
    rate = _check_rate(rate)
    pairs = {c: (c + 1) % num_classes for c in range(num_classes)}
    return _move_per_class(y, rate, pairs, _generator(seed)).to(labels.device)


def instance_dependent(labels: Tensor, rate: float, inputs: Tensor, num_classes: int, seed: int) -> Tensor:
    """Instance-dependent noise from the generator of Xia et al. [4] (formula and changes: module docstring).

    Args:
        labels: [N] integer labels in [0, num_classes).
        rate: nominal rate in [0, 1]; the realised rate is ≈ the mean of N(rate, 0.1²) truncated to [0, 1].
        inputs: [N, d] (or [N, ...], flattened) real values the noise depends on: flattened pixels or any
            features fixed before the evaluation, never the evaluated backbone's own.
        num_classes: C >= 2.
        seed: seed of the generator.

    Returns:
        [N] int64 noisy labels, on labels' device.
    """
    y = _check_labels(labels, num_classes)
    x = _check_inputs(inputs, len(y))
    rate = _check_rate(rate)
    gen = _generator(seed)
    noisy = y.clone()
    if rate == 0.0:
        return noisy.to(labels.device)
    flip_rate = _truncated_normal(rate, _FLIP_RATE_STD, len(y), gen)  # [N], q_n
    u = torch.rand(len(y), generator=gen, dtype=torch.float64)  # [N], one draw of ỹ each
    for c in range(num_classes):
        # W_c is drawn even for an absent class so that later classes see the same stream
        w = torch.randn(x.shape[1], num_classes, generator=gen, dtype=torch.float64)  # [d, C]
        members = torch.nonzero(y == c).squeeze(1)  # [n_c]
        logits = _unit_rms(x[members.to(x.device)].to("cpu", torch.float64)) @ w  # [n_c, C]
        logits[:, c] = -math.inf
        q = flip_rate[members]  # [n_c]
        probs = q[:, None] * torch.softmax(logits, dim=1)  # [n_c, C], off-diagonal mass q_n
        probs[:, c] = 1.0 - q
        noisy[members] = _sample(probs, u[members])
    return noisy.to(labels.device)


def multilabel_mixed(labels: Tensor, rate: float, seed: int) -> Tensor:
    """Flip max(1, round(rate·K)) random entries of each of exactly round(rate·N) random samples ([5]).

    Args:
        labels: [N, K] 0/1 multi-label targets (any real or integer dtype, or bool).
        rate: nominal rate in [0, 1]: the share of samples made noisy, and of their K entries flipped.
        seed: seed of the generator.

    Returns:
        [N, K] noisy targets, in labels' dtype and on its device.
    """
    y = _check_multilabel(labels)
    rate = _check_rate(rate)
    gen = _generator(seed)
    n, k = y.shape
    noisy = y.clone()
    n_noisy = round(rate * n)
    flips = max(1, round(rate * k)) if n_noisy else 0
    for row in torch.randperm(n, generator=gen)[:n_noisy].tolist():  # samples in draw order
        entries = torch.randperm(k, generator=gen)[:flips]
        noisy[row, entries] = ~noisy[row, entries]
    return noisy.to(labels.dtype).to(labels.device)


def multilabel_subtractive(labels: Tensor, rate: float, seed: int) -> Tensor:
    """Remove exactly round(rate·P) of the P present labels, chosen without replacement ([6]'s subtractive noise).

    Args:
        labels: [N, K] 0/1 multi-label targets.
        rate: nominal rate in [0, 1]: the share of present labels removed.
        seed: seed of the generator.

    Returns:
        [N, K] noisy targets, in labels' dtype and on its device.
    """
    y = _check_multilabel(labels)
    rate = _check_rate(rate)
    gen = _generator(seed)
    present = torch.nonzero(y.flatten()).squeeze(1)  # [P] flat positions of the present labels
    removed = present[torch.randperm(len(present), generator=gen)[:round(rate * len(present))]]
    noisy = y.flatten().clone()
    noisy[removed] = False
    return noisy.view_as(y).to(labels.dtype).to(labels.device)


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
        data = _check_multilabel(labels).to(torch.int64).numpy()
        return hashlib.sha256(f"{data.shape[0]}x{data.shape[1]}:".encode() + data.astype("<i8").tobytes()).hexdigest()
    if not _is_label_tensor(labels):
        raise ValueError(f"label noise: labels_sha256 needs 1-D integer labels [N], got {_describe(labels)}")
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
    rate = _check_rate(rate)
    _generator(seed)  # validates the seed for kind "none" too
    if labels.ndim == 2 and kind not in ("none", *MULTILABEL_KINDS):
        raise ValueError(f"label noise: kind {kind!r} is for single labels [N]; [N, K] multi-label targets take "
                         f"one of {MULTILABEL_KINDS}")
    if kind == "none":
        # single labels come back int64, multi-label targets in their own dtype (as the noisy kinds give them)
        clean = _check_multilabel(labels).to(labels.dtype) if labels.ndim == 2 else _check_labels(labels, num_classes)
        noisy, rate = clean.to(labels.device), 0.0
    elif kind == "multilabel_mixed":
        noisy = multilabel_mixed(labels, rate, seed)
    elif kind == "multilabel_subtractive":
        noisy = multilabel_subtractive(labels, rate, seed)
    elif kind == "symmetric":
        noisy = symmetric(labels, rate, num_classes, seed, convention=convention)
    elif kind == "asymmetric":
        mapping = CIFAR10_ASYMMETRIC if mapping is None else mapping
        _normalise_mapping(mapping, num_classes)  # sources and targets must be classes of this problem
        _check_labels(labels, num_classes)
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


def _move_per_class(y: Tensor, rate: float, pairs: dict[int, int], gen: torch.Generator) -> Tensor:
    """Move exactly round(rate·n_s) samples of each source s (chosen from the clean y: [N]) to pairs[s]."""
    noisy = y.clone()
    for source, target in sorted(pairs.items()):
        members = torch.nonzero(y == source).squeeze(1)  # [n_s]
        n_moved = round(rate * len(members))
        noisy[members[torch.randperm(len(members), generator=gen)[:n_moved]]] = target
    return noisy


def _truncated_normal(mean: float, std: float, n: int, gen: torch.Generator) -> Tensor:
    """[n] float64 draws of N(mean, std²) truncated to [0, 1], by inverse CDF (one uniform each)."""
    lo, hi = torch.special.ndtr(torch.tensor([(0.0 - mean) / std, (1.0 - mean) / std], dtype=torch.float64))
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    # clamp: Φ(b) rounds to 1 when b is large, and ndtri(1) = inf
    return (mean + std * torch.special.ndtri(lo + (hi - lo) * u)).clamp(0.0, 1.0)


def _unit_rms(x: Tensor) -> Tensor:
    """Rescale each row of x ([n, d]) to root-mean-square 1; all-zero rows stay zero."""
    rms = x.square().mean(dim=1, keepdim=True).sqrt()  # [n, 1]
    return x / torch.where(rms > 0, rms, torch.ones_like(rms))


def _sample(probs: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF draw of one class per row of probs ([n, C]) from uniforms u ([n]); returns [n] int64."""
    cdf = probs.cumsum(dim=1)  # [n, C]
    # right=True never lands on a zero-probability class; the clamp catches a cdf that summed to just below 1
    return torch.searchsorted(cdf, u[:, None], right=True).squeeze(1).clamp(max=probs.shape[1] - 1)


def _normalise_mapping(mapping: Mapping, num_classes: int | None = None) -> dict[int, int]:
    """Mapping with int or str (from YAML) keys and values -> {int: int}, validated."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(
            f"label noise: asymmetric mapping must be a non-empty source -> target dict, got {mapping!r}; "
            "e.g. CIFAR10_ASYMMETRIC"
        )
    pairs: dict[int, int] = {}
    for key, value in mapping.items():
        source, target = _class_id(key, "source", num_classes), _class_id(value, "target", num_classes)
        if source == target:
            raise ValueError(f"label noise: asymmetric mapping sends {source} to itself; fix or drop it")
        if source in pairs:
            raise ValueError(f"label noise: asymmetric mapping lists source class {source} twice ({key!r})")
        pairs[source] = target
    return pairs


def _class_id(value: object, role: str, num_classes: int | None) -> int:
    """One mapping entry (int, or a str of an int from YAML) -> int class id in [0, num_classes)."""
    class_id = _as_int(value, parse_str=True)
    if class_id is None or class_id < 0 or (num_classes is not None and class_id >= num_classes):
        where = ">= 0" if num_classes is None else f"in [0, {num_classes})"
        raise ValueError(
            f"label noise: asymmetric mapping {role} {value!r} is not a class index {where}; "
            "use int class indices (or their digit strings) and check num_classes"
        )
    return class_id


def _check_labels(labels: Tensor, num_classes: int | None) -> Tensor:
    """Validate labels ([N] integers in [0, num_classes)) and return a CPU int64 copy."""
    if not _is_label_tensor(labels):
        raise ValueError(f"label noise: labels must be a 1-D integer tensor [N], got {_describe(labels)}")
    if num_classes is not None and (_as_int(num_classes) is None or num_classes < 2):
        raise ValueError(f"label noise: num_classes must be an int >= 2, got {num_classes!r}")
    y = labels.detach().to("cpu", torch.int64, copy=True)
    if len(y) and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        where = ">= 0" if num_classes is None else f"in [0, {num_classes})"
        raise ValueError(
            f"label noise: labels must be {where}, found values in [{y.min()}, {y.max()}]; "
            "pass the right num_classes or remap the labels to 0..C-1"
        )
    return y


def _check_multilabel(labels: Tensor) -> Tensor:
    """[N, K] 0/1 targets -> a bool copy on the CPU; anything else raises saying what was expected."""
    if not isinstance(labels, Tensor) or labels.ndim != 2 or labels.is_complex():
        raise ValueError(f"label noise: multi-label kinds need [N, K] 0/1 targets, got {_describe(labels)}")
    y = labels.detach().cpu()
    if not ((y == 0) | (y == 1)).all():
        raise ValueError("label noise: multi-label targets must be 0 or 1 (label absent / present); got other values")
    return y.bool()


def _check_inputs(inputs: Tensor, n: int) -> Tensor:
    """Validate instance-noise inputs ([N, ...] real values, all finite) and return them as [N, d]."""
    if not isinstance(inputs, Tensor) or inputs.ndim < 2 or inputs.dtype == torch.bool or inputs.is_complex():
        raise ValueError(
            f"label noise: inputs must be a real tensor [N, d] (one row per label), got {_describe(inputs)}"
        )
    if inputs.shape[0] != n:
        raise ValueError(
            f"label noise: inputs has {inputs.shape[0]} rows but there are {n} labels; pass one row per label"
        )
    x = inputs.detach().flatten(1)  # [N, d]
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError("label noise: inputs contains NaN or inf; pass finite values")
    return x


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"label noise: rate must be a fraction in [0, 1] (not a percentage), got {rate!r}")
    return float(rate)


def _as_int(value: object, parse_str: bool = False) -> int | None:
    """value as an int if it is an integer (bools excluded) or, with parse_str, a str of one; else None."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if parse_str and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _generator(seed: int) -> torch.Generator:
    """A private CPU generator, so the global RNG is neither used nor advanced."""
    if _as_int(seed) is None:
        raise ValueError(f"label noise: seed must be an int, got {seed!r}")
    try:
        return torch.Generator().manual_seed(int(seed))
    except (RuntimeError, ValueError) as err:  # outside what torch can seed, e.g. 2**64
        raise ValueError(f"label noise: seed {seed} cannot seed a torch.Generator ({err})") from None


def _is_label_tensor(value: object) -> bool:
    """A 1-D tensor of an integer dtype (not bool)."""
    if not isinstance(value, Tensor) or value.ndim != 1:
        return False
    return not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"
