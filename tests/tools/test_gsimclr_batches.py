"""tools/gsimclr_batches.py: the batch statistics against naive pair loops."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location(
    "gsimclr_batches", Path(__file__).resolve().parents[2] / "tools" / "gsimclr_batches.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def naive_share(batch, classes):
    pairs = list(itertools.permutations(batch, 2))
    return sum(classes[a] == classes[b] for a, b in pairs) / len(pairs)


def test_same_class_share_equals_the_pair_loop():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 5, 200)
    batches = [rng.choice(200, 17, replace=False) for _ in range(6)]
    expected = np.mean([naive_share(b, classes) for b in batches])
    assert tool.same_class_negative_share(batches, classes) == pytest.approx(expected)


@pytest.mark.parametrize("batch, num_classes", [(256, 10), (64, 10), (8, 10), (33, 4)])
def test_balanced_floor_is_the_minimum_over_compositions(batch, num_classes):
    counts = np.full(num_classes, batch // num_classes)
    counts[: batch % num_classes] += 1
    classes = np.repeat(np.arange(num_classes), counts)
    assert tool.balanced_floor(batch, num_classes) == pytest.approx(naive_share(range(batch), classes))
    rng = np.random.default_rng(batch)
    for counts in rng.multinomial(batch, np.full(num_classes, 1 / num_classes), size=10):
        other = np.repeat(np.arange(num_classes), counts)
        assert naive_share(range(batch), other) >= tool.balanced_floor(batch, num_classes) - 1e-12


def test_purity_counts_majority_classes():
    labels = np.array([0, 0, 0, 1, 1, 2])
    classes = np.array([3, 3, 1, 2, 2, 0])
    assert tool.purity(labels, classes) == pytest.approx(5 / 6)
