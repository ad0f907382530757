"""Label noise for single labels ([N] integers in [0, C)): symmetric, asymmetric, pair-flip and
instance-dependent. `noise.corrupt` is the entry point; the conventions shared by every kind (pure
functions, seeded generators, exact counts) are in `noise.py`'s docstring. Below, round() is Python's
(half to even), C the number of classes, N the number of samples and n_c the number of samples of
class c.

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
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ssl_platform.evaluation.noise_checks import as_int, check_inputs, check_labels, check_rate, generator

SYMMETRIC_CONVENTIONS = ("exclusive", "inclusive")
# truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog [3]
CIFAR10_ASYMMETRIC: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

_FLIP_RATE_STD = 0.1  # std of the per-sample flip rate q_n of [4]


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
    y = check_labels(labels, num_classes)
    rate = check_rate(rate)
    gen = generator(seed)
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
    pairs = normalise_mapping(mapping)
    y = check_labels(labels, None)
    rate = check_rate(rate)
    return _move_per_class(y, rate, pairs, generator(seed)).to(labels.device)


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
    y = check_labels(labels, num_classes)
    rate = check_rate(rate)
    pairs = {c: (c + 1) % num_classes for c in range(num_classes)}
    return _move_per_class(y, rate, pairs, generator(seed)).to(labels.device)


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
    y = check_labels(labels, num_classes)
    x = check_inputs(inputs, len(y))
    rate = check_rate(rate)
    gen = generator(seed)
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


def normalise_mapping(mapping: Mapping, num_classes: int | None = None) -> dict[int, int]:
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
    class_id = as_int(value, parse_str=True)
    if class_id is None or class_id < 0 or (num_classes is not None and class_id >= num_classes):
        where = ">= 0" if num_classes is None else f"in [0, {num_classes})"
        raise ValueError(
            f"label noise: asymmetric mapping {role} {value!r} is not a class index {where}; "
            "use int class indices (or their digit strings) and check num_classes"
        )
    return class_id
