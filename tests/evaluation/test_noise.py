"""Label noise: exact counts and maps against naive recounts, both symmetric conventions, the Xia et al.
generator against a loop reference, determinism, hashing and every error message."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections import Counter

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats

from ssl_platform.evaluation.noise import KINDS, corrupt, labels_sha256, realised_rate
from ssl_platform.evaluation.noise_multilabel import (
    MULTILABEL_KINDS,
    multilabel_mixed,
    multilabel_subtractive,
)
from ssl_platform.evaluation.noise_single import (
    CIFAR10_ASYMMETRIC,
    SYMMETRIC_CONVENTIONS,
    asymmetric,
    instance_dependent,
    pair_flip,
    symmetric,
)

N, C = 10_000, 10


@pytest.fixture(scope="module")
def labels():
    """[10000] int64 labels, uniform over 10 classes."""
    return torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(123))


def random_inputs(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


def changed_fraction(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """The realised rate counted in plain Python."""
    pairs = list(zip(clean.tolist(), noisy.tolist(), strict=True))
    return sum(a != b for a, b in pairs) / len(pairs)


def transitions(clean: torch.Tensor, noisy: torch.Tensor) -> Counter:
    """(clean, noisy) -> count, in plain Python."""
    return Counter(zip(clean.tolist(), noisy.tolist(), strict=True))


def call(kind: str, labels: torch.Tensor, rate: float, seed: int, inputs: torch.Tensor | None = None):
    """`corrupt` with whatever each kind needs."""
    if inputs is None:
        inputs = random_inputs(len(labels), 16, 7)
    return corrupt(labels, kind, rate, C, seed, mapping=CIFAR10_ASYMMETRIC, inputs=inputs)


class TestSymmetric:
    @pytest.mark.parametrize("rate", [0.0, 0.1, 0.2, 0.45, 0.8, 1.0])
    def test_exclusive_realised_equals_nominal(self, labels, rate):
        noisy = symmetric(labels, rate, C, seed=0)
        assert sum(a != b for a, b in zip(labels.tolist(), noisy.tolist(), strict=True)) == round(rate * N)
        assert abs(changed_fraction(labels, noisy) - rate) <= 0.01
        assert noisy.dtype == torch.int64 and noisy.shape == labels.shape

    def test_exclusive_flips_are_uniform_over_the_other_classes(self, labels):
        noisy = symmetric(labels, 0.6, C, seed=1)
        table = transitions(labels, noisy)
        flipped = {k: v for k, v in table.items() if k[0] != k[1]}
        assert sum(flipped.values()) == 6000
        # chi-square of each clean class's flips over its 9 other classes, 10 x 8 degrees of freedom
        chi2 = 0.0
        for i in range(C):
            row = [flipped.get((i, j), 0) for j in range(C) if j != i]
            expected = sum(row) / (C - 1)
            chi2 += sum((o - expected) ** 2 / expected for o in row)
        assert chi2 < stats.chi2.ppf(1 - 1e-6, C * (C - 2))
        # the flipped samples are spread over the classes too, not taken from a few
        for i in range(C):
            n_i = sum(v for k, v in table.items() if k[0] == i)
            assert abs(sum(v for k, v in flipped.items() if k[0] == i) / n_i - 0.6) < 0.05

    def test_exclusive_never_keeps_the_true_label_of_a_chosen_sample(self, labels):
        # at rate 1 every sample is chosen, so no label may survive
        noisy = symmetric(labels, 1.0, C, seed=2)
        assert all(a != b for a, b in zip(labels.tolist(), noisy.tolist(), strict=True))

    @pytest.mark.parametrize("num_classes", [2, 10])
    @pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
    def test_inclusive_realised_is_rate_times_c_minus_1_over_c(self, rate, num_classes):
        y = torch.randint(0, num_classes, (N,), generator=torch.Generator().manual_seed(5))
        noisy = symmetric(y, rate, num_classes, seed=3, convention="inclusive")
        assert abs(changed_fraction(y, noisy) - rate * (num_classes - 1) / num_classes) <= 0.01

    def test_inclusive_redraws_over_all_classes(self, labels):
        noisy = symmetric(labels, 1.0, C, seed=4, convention="inclusive")
        # every label redrawn uniformly: the new labels are uniform and independent of the clean ones
        kept = sum(a == b for a, b in zip(labels.tolist(), noisy.tolist(), strict=True))
        assert abs(kept / N - 1 / C) < 0.01

    def test_exclusive_is_the_default(self, labels):
        expected = symmetric(labels, 0.3, C, 9, convention="exclusive")
        assert torch.equal(symmetric(labels, 0.3, C, 9), expected)
        assert torch.equal(corrupt(labels, "symmetric", 0.3, C, 9).labels, expected)
        assert SYMMETRIC_CONVENTIONS[0] == "exclusive"


class TestAsymmetric:
    def test_cifar10_map_is_the_standard_one(self):
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        flips = [
            ("truck", "automobile"),
            ("bird", "airplane"),
            ("deer", "horse"),
            ("cat", "dog"),
            ("dog", "cat"),
        ]
        assert CIFAR10_ASYMMETRIC == {names.index(a): names.index(b) for a, b in flips}

    @pytest.mark.parametrize("rate", [0.2, 0.4, 0.5, 1.0])
    def test_changes_follow_the_map_exactly(self, labels, rate):
        noisy = asymmetric(labels, rate, CIFAR10_ASYMMETRIC, seed=0)
        sizes = Counter(labels.tolist())
        moved = Counter()
        for a, b in zip(labels.tolist(), noisy.tolist(), strict=True):
            if a != b:
                assert CIFAR10_ASYMMETRIC[a] == b
                moved[a] += 1
        for cls in range(C):
            assert moved[cls] == (round(rate * sizes[cls]) if cls in CIFAR10_ASYMMETRIC else 0)
        # half the classes are sources
        assert abs(changed_fraction(labels, noisy) - rate / 2) <= 0.01

    def test_swap_moves_each_way_from_the_clean_labels(self, labels):
        noisy = asymmetric(labels, 1.0, CIFAR10_ASYMMETRIC, seed=0)
        cats, dogs = labels == 3, labels == 5
        assert (noisy[cats] == 5).all() and (noisy[dogs] == 3).all()

    def test_str_keys_from_yaml_and_key_order_give_the_same_labels(self, labels):
        expected = asymmetric(labels, 0.4, CIFAR10_ASYMMETRIC, seed=11)
        as_str = {str(k): str(v) for k, v in CIFAR10_ASYMMETRIC.items()}
        mixed = {"9": 1, 2: "0", "4": "7", 3: 5, "5": 3}
        reversed_order = dict(reversed(list(CIFAR10_ASYMMETRIC.items())))
        yaml = OmegaConf.create("{'9': '1', '2': '0', '4': '7', '3': '5', '5': '3'}")
        for mapping in (as_str, mixed, reversed_order, yaml):
            assert torch.equal(asymmetric(labels, 0.4, mapping, seed=11), expected)
            assert torch.equal(corrupt(labels, "asymmetric", 0.4, C, 11, mapping=mapping).labels, expected)

    def test_corrupt_defaults_to_the_cifar10_map(self, labels):
        expected = asymmetric(labels, 0.4, CIFAR10_ASYMMETRIC, seed=2)
        assert torch.equal(corrupt(labels, "asymmetric", 0.4, C, 2).labels, expected)

    def test_other_maps(self):
        y = torch.arange(20) % 4  # five samples per class
        noisy = asymmetric(y, 0.4, {0: 3}, seed=0)
        assert (noisy != y).sum() == 2 and (noisy[noisy != y] == 3).all() and (y[noisy != y] == 0).all()


def test_pair_flip_moves_exact_counts_to_the_next_class(labels):
    rate = 0.45
    noisy = pair_flip(labels, rate, C, seed=0)
    sizes, moved = Counter(labels.tolist()), Counter()
    for a, b in zip(labels.tolist(), noisy.tolist(), strict=True):
        if a != b:
            assert b == (a + 1) % C
            moved[a] += 1
    assert all(moved[c] == round(rate * sizes[c]) for c in range(C))
    assert abs(changed_fraction(labels, noisy) - rate) <= 0.01
    assert (pair_flip(labels, 1.0, C, 0) == (labels + 1) % C).all()  # the last class wraps to 0


def naive_instance_dependent(labels, rate, inputs, num_classes, seed):
    """The module docstring's recipe, one sample at a time: scipy for the normal quantile, numpy for the
    rest, the generator consumed in the documented order (q's uniforms, the draws' uniforms, W_0..W_C-1)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(labels)
    x = inputs.reshape(n, -1).double().numpy()
    lo, hi = stats.norm.cdf(-rate / 0.1), stats.norm.cdf((1 - rate) / 0.1)
    q = rate + 0.1 * stats.norm.ppf(
        lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64).numpy()
    )
    u = torch.rand(n, generator=gen, dtype=torch.float64).numpy()
    w = [
        torch.randn(x.shape[1], num_classes, generator=gen, dtype=torch.float64).numpy()
        for _ in range(num_classes)
    ]
    out = []
    for i, y in enumerate(labels.tolist()):
        row = x[i] / math.sqrt(np.mean(x[i] ** 2))
        s = row @ w[y]
        others = [j for j in range(num_classes) if j != y]
        e = {j: math.exp(s[j] - max(s[k] for k in others)) for j in others}
        p = [(1 - q[i]) if j == y else q[i] * e[j] / sum(e.values()) for j in range(num_classes)]
        cumulative, pick = 0.0, num_classes - 1
        for j in range(num_classes):
            cumulative += p[j]
            if u[i] < cumulative:
                pick = j
                break
        out.append(pick)
    return out


class TestInstanceDependent:
    def test_matches_a_loop_reference(self):
        y = torch.randint(0, 5, (1500,), generator=torch.Generator().manual_seed(0))
        x = torch.randn(1500, 3, 4, generator=torch.Generator().manual_seed(1))  # [N, ...] is flattened
        noisy = instance_dependent(y, 0.35, x, 5, seed=4)
        assert noisy.tolist() == naive_instance_dependent(y, 0.35, x, 5, seed=4)

    @pytest.mark.parametrize("rate", [0.2, 0.4, 0.6, 1.0])
    def test_realised_rate_is_the_mean_flip_rate(self, rate):
        y = torch.randint(0, C, (5000,), generator=torch.Generator().manual_seed(0))
        noisy = instance_dependent(y, rate, random_inputs(5000, 32, 1), C, seed=0)
        mean_q = stats.truncnorm(-rate / 0.1, (1 - rate) / 0.1, loc=rate, scale=0.1).mean()
        realised = changed_fraction(y, noisy)
        assert abs(realised - mean_q) < 0.025
        if rate < 1.0:
            assert abs(realised - rate) < 0.03

    def test_depends_on_the_inputs(self, labels):
        a = instance_dependent(labels, 0.4, random_inputs(N, 16, 1), C, seed=0)
        b = instance_dependent(labels, 0.4, random_inputs(N, 16, 2), C, seed=0)
        assert changed_fraction(a, b) > 0.1

    def test_copies_of_one_input_flip_to_the_same_class(self):
        # 20 prototypes x 200 copies: the flip distribution is a function of the input, near one-hot for
        # large d, so a prototype's flips concentrate on one class (symmetric noise would spread them)
        protos = torch.randn(20, 256, generator=torch.Generator().manual_seed(0))
        x, y = protos.repeat_interleave(200, dim=0), (torch.arange(20) % C).repeat_interleave(200)
        noisy = instance_dependent(y, 0.5, x, C, seed=0)
        shares, targets = [], set()
        for k in range(20):
            block = slice(k * 200, (k + 1) * 200)
            flips = Counter(
                b for a, b in zip(y[block].tolist(), noisy[block].tolist(), strict=True) if a != b
            )
            target, count = flips.most_common(1)[0]
            shares.append(count / sum(flips.values()))
            targets.add(target)
        assert sum(shares) / len(shares) > 0.8
        assert len(targets) >= 4

    def test_invariant_to_the_scale_of_the_inputs(self, labels):
        x = random_inputs(N, 16, 3)
        assert torch.equal(
            instance_dependent(labels, 0.3, x, C, 0), instance_dependent(labels, 0.3, 255 * x, C, 0)
        )

    def test_rate_zero_and_zero_rows(self, labels):
        x = random_inputs(N, 16, 3)
        assert torch.equal(instance_dependent(labels, 0.0, x, C, 0), labels)
        # an all-zero row has no preference: its flips are uniform over the other classes
        noisy = instance_dependent(labels, 0.4, torch.zeros(N, 8), C, 0)
        assert abs(changed_fraction(labels, noisy) - 0.4) < 0.03
        flipped = Counter(b - a for a, b in zip(labels.tolist(), noisy.tolist(), strict=True) if a != b)
        offsets = [flipped[k] + flipped[k - C] for k in range(1, C)]  # (noisy - clean) mod C
        expected = sum(offsets) / (C - 1)
        assert sum((o - expected) ** 2 / expected for o in offsets) < stats.chi2.ppf(1 - 1e-6, C - 2)


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in MULTILABEL_KINDS])
class TestEveryKind:
    def test_same_seed_same_labels_different_seed_different_labels(self, labels, kind):
        first, again = call(kind, labels, 0.3, 0), call(kind, labels, 0.3, 0)
        other = call(kind, labels, 0.3, 1)
        assert torch.equal(first.labels, again.labels) and first.sha256 == again.sha256
        assert torch.equal(first.labels, other.labels) == (kind == "none")

    def test_global_rng_neither_used_nor_advanced(self, labels, kind):
        torch.manual_seed(0)
        state = torch.get_rng_state()
        a = call(kind, labels, 0.3, 5)
        assert torch.equal(torch.get_rng_state(), state)
        torch.manual_seed(1)
        assert torch.equal(call(kind, labels, 0.3, 5).labels, a.labels)

    @pytest.mark.parametrize("rate", [0.0, 0.4])
    def test_inputs_are_not_modified_and_output_is_a_new_tensor(self, labels, kind, rate):
        y, x = labels.clone(), random_inputs(N, 16, 7)
        x_before, mapping = x.clone(), {"9": "1", 3: 5}
        out = corrupt(y, kind, rate, C, 0, mapping=mapping, inputs=x)
        assert torch.equal(y, labels) and torch.equal(x, x_before) and mapping == {"9": "1", 3: 5}
        assert out.labels.data_ptr() != y.data_ptr()
        if rate == 0.0:
            assert torch.equal(out.labels, labels) and out.realised == 0.0

    def test_record(self, labels, kind):
        out = call(kind, labels.to(torch.int32), 0.4, 3)
        assert out.kind == kind and out.seed == 3 and out.labels.dtype == torch.int64
        assert out.rate == (0.0 if kind == "none" else 0.4)
        assert out.realised == changed_fraction(labels, out.labels)
        assert out.sha256 == hashlib.sha256(struct.pack(f"<{N}q", *out.labels.tolist())).hexdigest()
        # the dtype of the clean labels does not change the noise
        assert torch.equal(out.labels, call(kind, labels, 0.4, 3).labels)


# ---- multi-label targets


@pytest.fixture(scope="module")
def multilabels():
    """[2000, 12] 0/1 float targets, each label present with probability 0.2."""
    return (torch.rand(2000, 12, generator=torch.Generator().manual_seed(9)) < 0.2).float()


@pytest.mark.parametrize("rate", [0.2, 0.4, 1.0])
def test_multilabel_mixed_flips_exact_counts_in_exact_samples(multilabels, rate):
    noisy = multilabel_mixed(multilabels, rate, seed=0)
    assert noisy.dtype == multilabels.dtype and noisy.shape == multilabels.shape
    # entries changed per sample, counted in plain Python
    flipped = [sum(a != b for a, b in zip(clean, dirty, strict=True))
               for clean, dirty in zip(multilabels.tolist(), noisy.tolist(), strict=True)]
    # exactly round(rate N) samples change, each in exactly max(1, round(rate K)) of its 12 entries
    assert set(flipped) == ({12} if rate == 1.0 else {0, max(1, round(rate * 12))})
    assert sum(f > 0 for f in flipped) == round(rate * 2000)
    assert set(noisy.unique().tolist()) <= {0.0, 1.0}
    assert realised_rate(multilabels, noisy) == pytest.approx(round(rate * 2000) / 2000)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_multilabel_subtractive_removes_exact_counts_and_adds_nothing(multilabels, rate):
    noisy = multilabel_subtractive(multilabels, rate, seed=3)
    present = int(multilabels.sum())
    assert int(((multilabels == 1) & (noisy == 0)).sum()) == round(rate * present)
    assert not ((multilabels == 0) & (noisy == 1)).any()  # missing labels only
    # a sample changed when it lost at least one label: the realised rate counts samples
    lost = ((multilabels - noisy).sum(1) > 0).double().mean().item()
    assert realised_rate(multilabels, noisy) == pytest.approx(lost)


@pytest.mark.parametrize("kind", ["none", *MULTILABEL_KINDS])
def test_multilabel_corrupt_is_seeded_pure_and_recorded(multilabels, kind):
    torch.manual_seed(0)
    state, before = torch.get_rng_state(), multilabels.clone()
    out = corrupt(multilabels, kind, 0.3, 0, seed=4)
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(multilabels, before)  # pure
    again, other = corrupt(multilabels, kind, 0.3, 0, seed=4), corrupt(multilabels, kind, 0.3, 0, seed=5)
    assert torch.equal(out.labels, again.labels) and out.sha256 == again.sha256
    assert torch.equal(out.labels, other.labels) == (kind == "none")
    assert out.kind == kind and out.rate == (0.0 if kind == "none" else 0.3)
    assert out.realised == realised_rate(multilabels, out.labels) and out.labels.data_ptr() != multilabels.data_ptr()
    # the digest is of the shape and the little-endian int64 entries
    flat = [int(v) for v in out.labels.flatten().tolist()]
    assert out.sha256 == hashlib.sha256(b"2000x12:" + struct.pack(f"<{len(flat)}q", *flat)).hexdigest()
    assert labels_sha256(multilabels.reshape(1000, 24)) != labels_sha256(multilabels)


def test_multilabel_kinds_and_single_label_kinds_refuse_each_others_labels(multilabels):
    with pytest.raises(ValueError, match=r"multi-label kinds need \[N, K\] 0/1 targets"):
        corrupt(Y, "multilabel_mixed", 0.2, C, 0)
    with pytest.raises(ValueError, match=r"kind 'symmetric' is for single labels \[N\]; \[N, K\] multi-label"):
        corrupt(multilabels, "symmetric", 0.2, C, 0)
    with pytest.raises(ValueError, match="multi-label targets must be 0 or 1"):
        multilabel_subtractive(multilabels * 2, 0.2, 0)


def test_labels_sha256_is_of_little_endian_int64_bytes():
    y = torch.tensor([0, 1, 2, 300, 7], dtype=torch.int16)
    assert labels_sha256(y) == hashlib.sha256(struct.pack("<5q", 0, 1, 2, 300, 7)).hexdigest()
    assert labels_sha256(torch.tensor([], dtype=torch.int64)) == hashlib.sha256(b"").hexdigest()


def test_realised_rate():
    assert realised_rate(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 2, 2, 0])) == 0.5
    assert realised_rate(torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64)) == 0.0


Y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (
            lambda: corrupt(Y, "gaussian", 0.2, C, 0),
            re.escape(f"unknown kind 'gaussian'; use one of {KINDS}"),
        ),
        (
            lambda: corrupt(Y, "symmetric", 0.2, C, 0, convention="both"),
            re.escape(f"unknown symmetric convention 'both'; use one of {SYMMETRIC_CONVENTIONS}"),
        ),
        (lambda: corrupt(Y, "instance", 0.2, C, 0), "kind 'instance' needs inputs; pass inputs="),
        (
            lambda: instance_dependent(Y, 0.2, torch.rand(9, 4), C, 0),
            "inputs has 9 rows but there are 10 labels",
        ),
        (lambda: instance_dependent(Y, 0.2, torch.rand(10), C, 0), r"inputs must be a real tensor \[N, d\]"),
        (
            lambda: instance_dependent(Y, 0.2, torch.full((10, 2), math.nan), C, 0),
            "inputs contains NaN or inf",
        ),
        (
            lambda: corrupt(Y, "asymmetric", 0.2, C, 0, mapping={1: 12}),
            re.escape("mapping target 12 is not a class index in [0, 10)"),
        ),
        (lambda: asymmetric(Y, 0.2, {1: -1}, 0), re.escape("mapping target -1 is not a class index >= 0")),
        (lambda: asymmetric(Y, 0.2, {"cat": 5}, 0), "mapping source 'cat' is not a class index"),
        (lambda: asymmetric(Y, 0.2, {3: 1.5}, 0), "mapping target 1.5 is not a class index"),
        (lambda: asymmetric(Y, 0.2, {3: True}, 0), "mapping target True is not a class index"),
        (lambda: asymmetric(Y, 0.2, {3: "3"}, 0), "mapping sends 3 to itself"),
        (lambda: asymmetric(Y, 0.2, {3: 5, "3": 4}, 0), "lists source class 3 twice"),
        (lambda: asymmetric(Y, 0.2, {}, 0), "mapping must be a non-empty source -> target dict"),
        (lambda: asymmetric(Y, 0.2, [(3, 5)], 0), "mapping must be a non-empty source -> target dict"),
        (lambda: symmetric(Y, 1.5, C, 0), r"rate must be a fraction in \[0, 1\]"),
        (lambda: symmetric(Y, -0.1, C, 0), r"rate must be a fraction in \[0, 1\]"),
        (lambda: symmetric(Y, math.nan, C, 0), r"rate must be a fraction in \[0, 1\]"),
        (lambda: corrupt(Y, "none", 40, C, 0), r"rate must be a fraction in \[0, 1\] \(not a percentage\)"),
        (lambda: pair_flip(Y, 0.2, 9, 0), re.escape("labels must be in [0, 9), found values in [0, 9]")),
        (
            lambda: asymmetric(Y - 1, 0.2, {3: 5}, 0),
            re.escape("labels must be >= 0, found values in [-1, 8]"),
        ),
        (lambda: symmetric(Y.float(), 0.2, C, 0), "labels must be a 1-D integer tensor"),
        (lambda: symmetric(Y.reshape(2, 5), 0.2, C, 0), "labels must be a 1-D integer tensor"),
        (lambda: symmetric(Y % 1, 0.2, 1, 0), "num_classes must be an int >= 2"),
        (lambda: symmetric(Y, 0.2, C, "0"), "seed must be an int"),
        (lambda: corrupt(Y, "none", 0.0, C, 1.5), "seed must be an int"),
        (lambda: symmetric(Y, 0.2, C, 2**70), "cannot seed a torch.Generator"),
        (lambda: realised_rate(Y, Y[:5]), "differ in shape"),
        (lambda: labels_sha256(Y.float()), "labels_sha256 needs 1-D integer labels"),
    ],
)
def test_errors(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()
