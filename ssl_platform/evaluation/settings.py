"""The labelled settings of a task: which training labels each protocol sees.

A setting is a label fraction, a seed and a noise setting (clean first, then every kind x rate). The
labelled subset of a fraction is class-balanced for classification (random otherwise) and drawn by the
seed from the clean labels; noise then corrupts that subset's labels, seeded by the same seed, so every
backbone sees exactly the same noisy labels. Only classification and multi-label targets take noise.
A retrieval task has no training labels: one setting per seed, all labels, clean.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator

import torch
from torch import Tensor

from ssl_platform.data.datasets import balanced_subset
from ssl_platform.evaluation import noise as noise_lib
from ssl_platform.evaluation.suite_schema import EvalConfig, NoiseConfig
from ssl_platform.evaluation.tasks import TaskData

NOISY_KINDS = ("classification", "multilabel")  # task kinds whose labels `noise.corrupt` can corrupt


@dataclasses.dataclass
class Setting:
    """One setting of a task and the labels its protocols train on.

    Attributes:
        fraction, seed: the label fraction and the seed of the subset and the noise.
        noise_kind, noise_rate: the noise setting ("none", 0.0 for clean labels).
        keep: [n] indices of the labelled subset in the training set (None for retrieval).
        x: [n, D] the subset's cached features; y: [n] or [n, K] its labels after the noise.
        noisy: what the noise did (None where the task kind takes no noise).
    """

    fraction: float
    seed: int
    noise_kind: str = "none"
    noise_rate: float = 0.0
    keep: Tensor | None = None
    x: Tensor | None = None
    y: Tensor | None = None
    noisy: noise_lib.NoisyLabels | None = None

    @property
    def name(self) -> str:
        """The setting's directory name under `runs/<task>/`, e.g. `f0.1-symmetric0.4-s0`."""
        return f"f{self.fraction:g}-{self.noise_kind}{self.noise_rate:g}-s{self.seed}"

    @property
    def realised_rate(self) -> float:
        """The share of labels the noise really changed."""
        return 0.0 if self.noisy is None else self.noisy.realised

    def labels_sha256(self) -> str:
        """The training labels' fingerprint (a real target's float64 bytes where no noise applies)."""
        if self.noisy is not None:
            return self.noisy.sha256
        return hashlib.sha256(self.y.to(torch.float64).numpy().tobytes()).hexdigest()


def labelled_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices of a class-balanced `fraction` of `labels` ([N]); everything for fraction 1.0."""
    limit = None if fraction >= 1.0 else max(1, round(fraction * len(labels)))
    return torch.from_numpy(balanced_subset(labels.numpy(), limit, seed))


def random_subset(n: int, fraction: float, seed: int) -> Tensor:
    """Sorted indices of a random `fraction` of `n` samples (regression and multi-label tasks)."""
    if fraction >= 1.0:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: max(1, round(fraction * n))].sort().values


def noise_settings(noise: NoiseConfig) -> list[tuple[str, float]]:
    """(kind, nominal rate) pairs: the clean setting first, then every kind x rate."""
    return [("none", 0.0)] + [(kind, float(rate)) for kind in noise.kinds for rate in noise.rates]


def task_settings(data: TaskData, ev: EvalConfig, noise: NoiseConfig, use_noise: bool) -> Iterator[Setting]:
    """Every setting of a task in order: label fraction, then seed, then noise (clean first).

    Args:
        data: the loaded task (its cached training features and labels).
        ev: the suite's `eval:` section (label fractions, seeds); noise: its `noise:` section.
        use_noise: the task's `noise` flag; noise applies to `NOISY_KINDS` only.
    """
    if data.kind == "retrieval":
        for seed in ev.seeds:
            yield Setting(fraction=1.0, seed=seed)
        return
    noisy_kind = data.kind in NOISY_KINDS
    settings = noise_settings(noise) if noisy_kind and use_noise else [("none", 0.0)]
    x_all, y_all = data.train
    for fraction in ev.label_fractions:
        for seed in ev.seeds:
            if data.kind == "classification":
                keep = labelled_subset(y_all, float(fraction), seed)
            else:
                keep = random_subset(len(y_all), float(fraction), seed)
            x, clean = x_all[keep], y_all[keep]
            for kind, rate in settings:
                noisy = noise_lib.corrupt(
                    clean, kind, rate, data.num_classes, seed, convention=noise.convention,
                    mapping=noise.mapping, inputs=None if data.pixels is None else data.pixels[keep],
                ) if noisy_kind else None
                y = clean if noisy is None else noisy.labels
                yield Setting(fraction, seed, kind, rate, keep=keep, x=x, y=y, noisy=noisy)
