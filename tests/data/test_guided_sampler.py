"""GuidedBatchSampler (G-SimCLR's batches of distinct pseudo-labels) and the full-batch bound.

Property tests on synthetic labels, including uneven cluster sizes like k-means gives, on simulated
ranks (every rank is built separately, as under torchrun). The hypothesis tests draw the same examples
every run (the "ci" profile of tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from ssl_platform.data.collate import TransformedDataset, collate
from ssl_platform.data.samplers import GuidedBatchSampler, full_batch_bound, sample_seed


def uneven_labels(n: int, k: int, seed: int) -> np.ndarray:
    """Cluster sizes spread over a decade (a Dirichlet draw), shuffled over the indices."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 0.7))
    return rng.choice(k, size=n, p=weights)


def naive_bound(counts: np.ndarray, batch: int) -> int:
    """The definition, one t at a time: the largest t with sum_c min(n_c, t) >= batch * t."""
    best = 0
    for t in range(1, int(counts.sum()) // batch + 1):
        if sum(min(int(c), t) for c in counts) >= batch * t:
            best = t
    return best


def ranks(labels, batch_size, world, **kw) -> list[GuidedBatchSampler]:
    return [GuidedBatchSampler(labels, len(labels), batch_size, world, r, **kw) for r in range(world)]


def global_batches_from_ranks(samplers: list[GuidedBatchSampler]) -> list[list[int]]:
    """Reassemble each global batch from what the separate ranks yield."""
    per_rank = [[[i for i, _ in batch] for batch in s] for s in samplers]
    assert len({len(p) for p in per_rank}) == 1, "ranks got different batch counts"
    return [[i for p in per_rank for i in p[b]] for b in range(len(per_rank[0]))]


@settings(max_examples=300)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=60), batch=st.integers(1, 30))
def test_bound_matches_its_definition(counts, batch):
    counts = np.array(counts)
    assert full_batch_bound(counts, batch) == naive_bound(counts, batch)


@pytest.mark.parametrize("remainder", ["drop", "fill"])
def test_every_global_batch_has_distinct_labels_across_ranks(remainder):
    labels = uneven_labels(10_000, 300, seed=0)
    samplers = ranks(labels, 16, 4, seed=5, remainder=remainder)  # global batch 64
    batches = global_batches_from_ranks(samplers)
    bound = full_batch_bound(np.bincount(labels), 64)
    distinct = [len(set(labels[b])) == 64 for b in batches]
    assert all(len(b) == 64 for b in batches)
    assert sum(distinct) == bound
    if remainder == "drop":
        assert all(distinct) and len(batches) == bound
    else:
        assert len(batches) == 10_000 // 64  # as long as a plain shuffled epoch


@pytest.mark.parametrize("remainder", ["drop", "fill"])
def test_an_epoch_uses_each_index_at_most_once(remainder):
    labels = uneven_labels(5_000, 200, seed=1)
    batches = global_batches_from_ranks(ranks(labels, 8, 4, seed=2, remainder=remainder))
    used = np.concatenate(batches)
    assert len(np.unique(used)) == len(used), "an index repeats within the epoch"
    if remainder == "fill":
        assert len(used) == 5_000 - 5_000 % 32


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_equal_batch_counts_on_every_rank(world):
    labels = uneven_labels(3_001, 150, seed=world)
    for remainder in ("drop", "fill"):
        samplers = ranks(labels, 4, world, seed=0, remainder=remainder)
        counts = {len(list(s)) for s in samplers}
        assert len(counts) == 1 and counts == {len(samplers[0])}
        assert {s.batches_per_epoch(4) for s in samplers} == counts


def test_deterministic_per_seed_and_epoch_and_reshuffled_between_epochs():
    labels = uneven_labels(2_000, 100, seed=3)
    a, b = GuidedBatchSampler(labels, 2_000, 32, seed=7), GuidedBatchSampler(labels, 2_000, 32, seed=7)
    for s in (a, b):
        s.set_epoch(4)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(5)
    assert list(a) != first
    other_seed = GuidedBatchSampler(labels, 2_000, 32, seed=8)
    other_seed.set_epoch(4)
    assert list(other_seed) != first


@st.composite
def clusterings(draw) -> tuple[int, int, int, int]:
    """(clusters k, batch <= k, samples n in [k, 40 k], seed of the uneven cluster sizes).

    n is drawn as samples per cluster, then the rest: hypothesis favours small integers, and most
    clusterings worth checking hold hundreds or thousands of samples.
    """
    k = draw(st.integers(8, 120))
    n = k * draw(st.integers(1, 39)) + draw(st.integers(0, k))
    return k, draw(st.integers(2, k)), n, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=300)
@given(clustering=clusterings())
def test_greedy_fill_reaches_the_bound(clustering):
    k, batch, n, case = clustering
    labels = uneven_labels(n, k, seed=case)
    if len(np.unique(labels)) < batch:
        labels[: k] = np.arange(k)  # every label present at least once
    sampler = GuidedBatchSampler(labels, n, batch, seed=case, remainder="drop")
    batches = sampler.global_batches()
    assert len(batches) == full_batch_bound(np.bincount(labels), batch)
    assert all(len(set(labels[b])) == batch for b in batches)


def test_items_carry_the_same_per_draw_seeds_as_the_plain_sampler():
    labels = np.arange(40) % 10
    sampler = GuidedBatchSampler(labels, 40, 5, num_replicas=2, rank=1, seed=3)
    sampler.set_epoch(2)
    for batch in sampler:
        assert all(seed == sample_seed(3, 2, i) for i, seed in batch)


@pytest.mark.parametrize("start_batches", [0, 1, 7])
def test_set_start_skips_whole_batches_for_resumption(start_batches):
    labels = uneven_labels(1_000, 60, seed=4)
    sampler = GuidedBatchSampler(labels, 1_000, 10, num_replicas=2, rank=0, seed=1)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_start(start_batches * 10)
    assert list(sampler) == full[start_batches:]
    assert len(sampler) == len(full) - start_batches
    with pytest.raises(ValueError, match="whole number of batches"):
        sampler.set_start(15)


def test_new_labels_take_effect_in_the_same_epoch():
    n = 600
    sampler = GuidedBatchSampler(np.arange(n) % 60, n, 30, seed=0)
    before = list(sampler)
    relabelled = np.random.default_rng(0).permutation(n) % 60
    sampler.set_labels(relabelled)
    after = [[i for i, _ in b] for b in sampler]
    assert after != [[i for i, _ in b] for b in before]
    assert all(len(set(relabelled[b])) == 30 for b in after)


def test_feeds_a_dataloader_as_batch_sampler():
    class Items:
        def __len__(self):
            return 64

        def __getitem__(self, i):
            return np.float32(i), i % 16

    labels = np.arange(64) % 16
    sampler = GuidedBatchSampler(labels, 64, 8, seed=0)
    loader = DataLoader(TransformedDataset(Items(), lambda x: {"x": x}), batch_sampler=sampler, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 8
    for batch in batches:
        assert batch["index"].shape == (8,)
        assert len(set(labels[batch["index"].numpy()])) == 8


def test_bad_inputs_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="use at least 64 clusters"):
        GuidedBatchSampler(np.arange(1000) % 10, 1000, 32, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match=r"shape \(100,\)"):
        GuidedBatchSampler(np.arange(99), 100, 4)
    with pytest.raises(ValueError, match="remainder must be one of"):
        GuidedBatchSampler(np.arange(100), 100, 4, remainder="pad")
    with pytest.raises(ValueError, match="rank 2 is outside"):
        GuidedBatchSampler(np.arange(100), 100, 4, num_replicas=2, rank=2)
    with pytest.raises(RuntimeError, match="call set_labels"):
        list(GuidedBatchSampler(None, 100, 4))


@pytest.mark.parametrize("remainder", ["fill", "drop"])
def test_the_same_global_micro_batch_split_over_other_ranks_gives_the_same_batches(remainder):
    """Elastic resumption: 4 x 16 and 2 x 32 (global 64) build the same distinct-label global batches, and 2 x 32
    resumed after 5 batches continues them exactly."""
    labels = uneven_labels(3_000, 200, seed=6)

    def epoch(batch_size, world, start=0):
        samplers = ranks(labels, batch_size, world, seed=2, remainder=remainder)
        for s in samplers:
            s.set_epoch(1)
            s.set_start(start * batch_size)
        return global_batches_from_ranks(samplers)

    four = epoch(16, 4)
    assert len(four) > 10 and four == epoch(32, 2) == epoch(64, 1)
    assert four[:5] + epoch(32, 2, start=5) == four
