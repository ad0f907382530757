"""Label noise for multi-label targets ([N, K] 0/1, K labels): mixed flips and subtractive (missing)
labels. `noise.corrupt` is the entry point; the conventions shared by every kind are in `noise.py`'s
docstring.

Multi-label targets ([N, K] 0/1, K labels; `MULTILABEL_KINDS`):
- multilabel_mixed (RCML, Aksoy et al. [0]): exactly round(rate·N) samples, chosen without replacement,
  each have max(1, round(rate·K)) of their K entries, chosen without replacement, flipped: wrong labels
  added and true ones removed at once (RCML truncates rate·K instead of rounding it).
- multilabel_subtractive (Burgert et al. [1]'s subtractive noise, i.e. missing annotations): exactly
  round(rate·P) of the P present labels of the whole set, chosen without replacement, are removed; no
  label is added. A sample may end up with no label.
For both, `realised` is the fraction of samples whose label set changed, as for single labels.

- [0]: Aksoy et al., Multi-Label Noise Robust Collaborative Learning for Remote Sensing Image
  Classification, IEEE TNNLS 2022 (code: github.com/hoanganhloan172/RCML)
- [1]: Burgert et al., On the Effects of Different Types of Label Noise in Multi-Label Remote Sensing
  Image Classification, IEEE TGRS 2022
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_platform.evaluation.noise_checks import check_multilabel, check_rate, generator

# the kinds for [N, K] 0/1 multi-label targets ("none" takes either)
MULTILABEL_KINDS = ("multilabel_mixed", "multilabel_subtractive")


def multilabel_mixed(labels: Tensor, rate: float, seed: int) -> Tensor:
    """Flip max(1, round(rate·K)) random entries of each of exactly round(rate·N) random samples ([0]).

    Args:
        labels: [N, K] 0/1 multi-label targets (any real or integer dtype, or bool).
        rate: nominal rate in [0, 1]: the share of samples made noisy, and of their K entries flipped.
        seed: seed of the generator.

    Returns:
        [N, K] noisy targets, in labels' dtype and on its device.
    """
    y = check_multilabel(labels)
    rate = check_rate(rate)
    gen = generator(seed)
    n, k = y.shape
    noisy = y.clone()
    n_noisy = round(rate * n)
    flips = max(1, round(rate * k)) if n_noisy else 0
    for row in torch.randperm(n, generator=gen)[:n_noisy].tolist():  # samples in draw order
        entries = torch.randperm(k, generator=gen)[:flips]
        noisy[row, entries] = ~noisy[row, entries]
    return noisy.to(labels.dtype).to(labels.device)


def multilabel_subtractive(labels: Tensor, rate: float, seed: int) -> Tensor:
    """Remove exactly round(rate·P) of the P present labels, chosen without replacement ([1]'s subtractive noise).

    Args:
        labels: [N, K] 0/1 multi-label targets.
        rate: nominal rate in [0, 1]: the share of present labels removed.
        seed: seed of the generator.

    Returns:
        [N, K] noisy targets, in labels' dtype and on its device.
    """
    y = check_multilabel(labels)
    rate = check_rate(rate)
    gen = generator(seed)
    present = torch.nonzero(y.flatten()).squeeze(1)  # [P] flat positions of the present labels
    removed = present[torch.randperm(len(present), generator=gen)[:round(rate * len(present))]]
    noisy = y.flatten().clone()
    noisy[removed] = False
    return noisy.view_as(y).to(labels.dtype).to(labels.device)
