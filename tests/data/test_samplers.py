"""ResumableSampler (DistributedSampler order + per-draw seeds) and TransformedDataset / collate."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ssl_platform.data.collate import TransformedDataset, collate
from ssl_platform.data.samplers import ResumableSampler, sample_seed


def draws(sampler: ResumableSampler) -> list[tuple[int, int]]:
    return list(sampler)


def indices(sampler: ResumableSampler) -> list[int]:
    return [i for i, _ in sampler]


# ---- ResumableSampler


def test_yields_index_seed_pairs():
    sampler = ResumableSampler(10, seed=3)
    sampler.set_epoch(2)
    pairs = draws(sampler)
    assert len(pairs) == len(sampler) == 10
    assert sorted(i for i, _ in pairs) == list(range(10))
    for index, seed in pairs:
        assert isinstance(index, int) and isinstance(seed, int)
        assert seed == sample_seed(3, 2, index)
        assert 0 <= seed < 2**63


@pytest.mark.parametrize(
    "replicas, n, drop_last", [(1, 17, True), (2, 17, True), (3, 20, True), (2, 17, False)]
)
@pytest.mark.parametrize("epoch", [0, 5])
def test_order_equals_distributed_sampler(replicas, n, drop_last, epoch):
    for rank in range(replicas):
        ours = ResumableSampler(n, num_replicas=replicas, rank=rank, seed=11, drop_last=drop_last)
        ref = DistributedSampler(range(n), num_replicas=replicas, rank=rank, shuffle=True, seed=11,
                                 drop_last=drop_last)
        ours.set_epoch(epoch)
        ref.set_epoch(epoch)
        assert indices(ours) == list(ref)
        assert len(ours) == len(ref)


def test_no_shuffle_is_identity_order():
    sampler = ResumableSampler(7, shuffle=False)
    sampler.set_epoch(4)
    assert indices(sampler) == list(range(7))


@pytest.mark.parametrize("start", [0, 1, 6, 13, 14])
def test_set_start_yields_exactly_the_tail(start):
    sampler = ResumableSampler(14, seed=2)
    sampler.set_epoch(3)
    full = draws(sampler)
    sampler.set_start(start)
    tail = draws(sampler)
    assert tail == full[start:]
    assert len(sampler) == 14 - start
    sampler.set_start(0)
    assert draws(sampler) == full


def test_set_start_per_rank():
    full = ResumableSampler(20, num_replicas=2, rank=1, seed=0)
    resumed = ResumableSampler(20, num_replicas=2, rank=1, seed=0)
    full.set_epoch(1)
    resumed.set_epoch(1)
    resumed.set_start(4)
    assert draws(resumed) == draws(full)[4:]


@pytest.mark.parametrize("replicas, n", [(2, 20), (2, 21), (3, 20)])
def test_ranks_partition_the_data(replicas, n):
    per_rank = []
    for rank in range(replicas):
        sampler = ResumableSampler(n, num_replicas=replicas, rank=rank, seed=5)
        sampler.set_epoch(1)
        per_rank.append(indices(sampler))
    assert len({len(r) for r in per_rank}) == 1 and len(per_rank[0]) == n // replicas  # drop_last: equal
    union = [i for r in per_rank for i in r]
    assert len(union) == len(set(union))  # disjoint, no padding duplicates
    assert set(union) <= set(range(n))
    assert len(union) == n - n % replicas


def global_micro_batches(n, replicas, batch_size, epoch=1, start=0):
    """Each global micro-batch as the ranks' blocks in rank order (what NT-Xent gathers), per micro-step."""
    per_rank = []
    for rank in range(replicas):
        sampler = ResumableSampler(n, num_replicas=replicas, rank=rank, seed=7, batch_size=batch_size)
        sampler.set_epoch(epoch)
        sampler.set_start(start)
        per_rank.append(indices(sampler))
    micro = len(per_rank[0]) // batch_size
    return [[i for r in per_rank for i in r[m * batch_size:(m + 1) * batch_size]] for m in range(micro)]


@pytest.mark.parametrize("n", [96, 101])
def test_global_order_depends_on_the_global_batch_not_on_its_split(n):
    """4 x 4, 2 x 8 and 1 x 16 make the same global micro-batches: the epoch's permutation cut in 16s."""
    one = global_micro_batches(n, 1, 16)
    assert global_micro_batches(n, 2, 8) == global_micro_batches(n, 4, 4) == one
    sampler = ResumableSampler(n, seed=7, batch_size=16)
    sampler.set_epoch(1)
    perm = sampler.global_order().tolist()
    assert sorted(perm) == list(range(n))
    assert one == [perm[m * 16:(m + 1) * 16] for m in range(n // 16)]  # the tail short of 16 is dropped
    # accumulation: 2 micro-steps of 2 x 4 are one optimizer step of the same 16 samples
    two_by_four = global_micro_batches(n, 2, 4)
    assert [a + b for a, b in zip(two_by_four[::2], two_by_four[1::2])] == one


def test_resuming_on_another_split_continues_the_global_order():
    """3 micro-steps of 4 x 4 done: 2 x 8 resumes at 3 x 8 draws per rank and sees the rest of the order."""
    assert global_micro_batches(96, 4, 4)[:3] + global_micro_batches(96, 2, 8, start=3 * 8) == \
        global_micro_batches(96, 1, 16)


def test_seeds_depend_on_seed_epoch_index_only():
    def seed_map(replicas):
        out = {}
        for rank in range(replicas):
            sampler = ResumableSampler(24, num_replicas=replicas, rank=rank, seed=9)
            sampler.set_epoch(2)
            out.update(dict(draws(sampler)))
        return out

    single, two, three = seed_map(1), seed_map(2), seed_map(3)
    assert len(single) == 24
    for index in two:
        assert two[index] == single[index]
    for index in three:
        assert three[index] == single[index]
    # distinct per item, per epoch and per base seed
    assert len(set(single.values())) == 24
    assert sample_seed(9, 2, 5) != sample_seed(9, 3, 5)
    assert sample_seed(9, 2, 5) != sample_seed(10, 2, 5)
    assert sample_seed(9, 2, 5) == sample_seed(9, 2, 5)


def test_epochs_reshuffle_and_are_reproducible():
    sampler = ResumableSampler(30, seed=1)
    orders = []
    for epoch in (0, 1, 2, 0):
        sampler.set_epoch(epoch)
        orders.append(indices(sampler))
    assert orders[0] != orders[1] and orders[1] != orders[2]
    assert orders[3] == orders[0]
    assert all(sorted(o) == list(range(30)) for o in orders)
    other_seed = ResumableSampler(30, seed=2)
    assert indices(other_seed) != orders[0]


# ---- TransformedDataset and collate


class Items(Dataset):
    def __init__(self, n=8):
        self.x = torch.arange(n * 4, dtype=torch.float32).reshape(n, 1, 2, 2)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], torch.tensor(i % 3)


def noisy_views(x):
    """Draws from all three global RNGs, as torchvision / albumentations-style transforms do."""
    return {
        "views": [x + torch.randn_like(x), x * torch.rand(1)],
        "py": random.random(),
        "np": float(np.random.rand()),
    }


def rng_states():
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def assert_same_rng(a, b):
    assert torch.equal(a[0], b[0])
    assert a[1] == b[1]
    assert a[2][0] == b[2][0] and np.array_equal(a[2][1], b[2][1]) and a[2][2:] == b[2][2:]


def test_seeded_item_is_deterministic_and_keeps_caller_rng():
    data = TransformedDataset(Items(), noisy_views)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    before = rng_states()
    first = data[(3, 12345)]
    assert_same_rng(rng_states(), before)
    # the caller's streams continue as if no item had been drawn
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.set_rng_state(before[0])
    random.setstate(before[1])
    np.random.set_state(before[2])
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]

    # same (index, seed) -> same output, whatever the caller's RNG state
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    again = data[(3, 12345)]
    for a, b in zip(first["views"], again["views"]):
        assert torch.equal(a, b)
    assert first["py"] == again["py"] and first["np"] == again["np"]
    assert first["label"] == 0 and first["index"] == 3

    other = data[(3, 12346)]
    assert not torch.equal(other["views"][0], first["views"][0])
    assert other["py"] != first["py"] and other["np"] != first["np"]


def test_views_within_one_draw_are_different():
    out = TransformedDataset(Items(), noisy_views)[(2, 7)]
    assert not torch.equal(out["views"][0], out["views"][1])


def test_unseeded_item_uses_global_rng():
    data = TransformedDataset(Items(), noisy_views)
    torch.manual_seed(5)
    a = data[1]
    torch.manual_seed(5)
    b = data[1]
    c = data[1]
    assert torch.equal(a["views"][0], b["views"][0])
    assert not torch.equal(b["views"][0], c["views"][0])  # the global stream moved on
    assert a["index"] == 1 and a["label"] == 1


def test_no_transform_passes_image_through():
    out = TransformedDataset(Items())[(5, 1)]
    assert set(out) == {"image", "label", "index"}
    assert torch.equal(out["image"], Items()[5][0]) and out["label"] == 2 and out["index"] == 5
    assert isinstance(out["label"], int)


@pytest.mark.parametrize("key", [(0, 3), 0])
def test_non_dict_transform_raises_helpful_type_error(key):
    def to_tensor(x):
        return x * 2

    data = TransformedDataset(Items(), to_tensor)
    with pytest.raises(TypeError) as info:
        data[key]
    message = str(info.value)
    assert "returned Tensor" in message
    assert "must return a dict" in message and "{'views': [...]}" in message


def test_collate_stacks_lists_of_views():
    data = TransformedDataset(Items(), noisy_views)
    items = [data[(i, 100 + i)] for i in (4, 1, 6)]
    batch = collate(items)
    assert isinstance(batch["views"], list) and len(batch["views"]) == 2
    for v, view in enumerate(batch["views"]):
        assert view.shape == (3, 1, 2, 2)
        for b, item in enumerate(items):
            assert torch.equal(view[b], item["views"][v])
    assert torch.equal(batch["label"], torch.tensor([1, 1, 0]))
    assert torch.equal(batch["index"], torch.tensor([4, 1, 6]))


def test_loader_resumed_mid_epoch_sees_the_same_batches():
    data = TransformedDataset(Items(12), noisy_views)

    def batches(start):
        sampler = ResumableSampler(len(data), seed=4)
        sampler.set_epoch(1)
        sampler.set_start(start)
        return list(DataLoader(data, batch_size=3, sampler=sampler, collate_fn=collate, num_workers=0))

    full, resumed = batches(0), batches(6)
    assert len(full) == 4 and len(resumed) == 2
    for a, b in zip(full[2:], resumed):
        assert torch.equal(a["index"], b["index"])
        for va, vb in zip(a["views"], b["views"]):
            assert torch.equal(va, vb)
