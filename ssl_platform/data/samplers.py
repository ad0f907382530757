"""Samplers. `ResumableSampler` is the engine's: a global order that can start mid-epoch and hands
every draw its own seed, so augmentations are a pure function of (seed, epoch, index).

That makes a resumed run see exactly the views an uninterrupted run would have seen, whatever the
number of data-loader workers, and makes a sample's views the same on any number of processes. Both
samplers cut one global schedule into per-rank slices, so the samples of an optimizer step depend on
the global batch, not on the number of processes (elastic resumption).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one draw of dataset item `index` in `epoch`."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


class ResumableSampler(Sampler):
    """Yields `(index, seed)` pairs in the engine's global order, skippable to a position.

    The order is one permutation of the dataset per epoch, drawn from (seed, epoch) alone (torch's
    `randperm`, as torch's DistributedSampler draws it). Its consecutive runs of `batch_size x
    num_replicas` samples are the global micro-batches, and rank r takes the r-th `batch_size` of each.
    So which samples an optimizer step trains on depends on the seed and the global batch only, never
    on how it is split into processes: a run written by 4 processes x 64 resumes on 2 x 128 and sees
    exactly the samples an uninterrupted run would have seen.

    `batch_size=1` is torch's DistributedSampler order (rank r takes every num_replicas-th sample):
    the order runs written before the global order kept, which they keep when resumed.

    Args:
        num_samples: dataset length N.
        num_replicas, rank: process layout (1, 0 for a single process).
        shuffle: reshuffle every epoch (`set_epoch`); False keeps the dataset order.
        seed: base seed for the order and for the per-draw augmentation seeds.
        drop_last: drop the tail that cannot fill a whole global micro-batch (no padding duplicates).
            False is for evaluation-style passes only: it wraps around to pad the last global
            micro-batch, as DistributedSampler pads.
        batch_size: per process; the run of consecutive global positions each rank takes in turn.
    """

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = True, batch_size: int = 1):
        super().__init__()
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples, self.num_replicas, self.rank = num_samples, num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.batch_size = shuffle, seed, drop_last, batch_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        """Skip the first `start` draws of this rank's epoch (resuming mid-epoch)."""
        self.start = start

    @property
    def global_micro_batch(self) -> int:
        return self.batch_size * self.num_replicas

    def _per_rank(self) -> int:
        """Draws each rank gets in an epoch."""
        g = self.global_micro_batch
        micro = self.num_samples // g if self.drop_last else -(-self.num_samples // g)
        return micro * self.batch_size

    def batches_per_epoch(self, batch_size: int) -> int:
        """Full batches of `batch_size` this rank gets in an epoch (the engine drops a partial one)."""
        return self._per_rank() // batch_size

    def __len__(self) -> int:
        return max(self._per_rank() - self.start, 0)

    def global_order(self) -> np.ndarray:
        """`[N]` this epoch's permutation of the dataset indices, the same on every rank."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # DistributedSampler's seeding, so its order is batch_size=1's
        return torch.randperm(self.num_samples, generator=g).numpy()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.global_order()
        n_micro, b = self._per_rank() // self.batch_size, self.batch_size
        if n_micro * self.global_micro_batch > len(order):  # drop_last=False: pad by wrapping around
            order = np.resize(order, n_micro * self.global_micro_batch)
        # [micro, rank, b]: rank r's draws are the r-th block of every global micro-batch
        mine = order[: n_micro * self.global_micro_batch].reshape(n_micro, self.num_replicas, b)[:, self.rank]
        for index in mine.reshape(-1)[self.start:].tolist():
            yield index, sample_seed(self.seed, self.epoch, index)


def full_batch_bound(counts: np.ndarray, batch: int) -> int:
    """The most batches of `batch` distinct labels that clusters of sizes `counts` can fill.

    t batches need t x batch items with at most t from each cluster (one per batch), so the bound is
    max{t : sum_c min(n_c, t) >= batch * t}. The slack f(t) = sum_c min(n_c, t) - batch * t is concave
    with f(0) = 0, so the feasible t form an interval starting at 0 and a binary search finds its end.
    """
    counts = np.asarray(counts, dtype=np.int64)
    lo, hi = 0, int(counts.sum()) // batch
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(counts, mid).sum() >= batch * mid:
            lo = mid
        else:
            hi = mid - 1
    return lo


class GuidedBatchSampler(Sampler):
    """Batches whose samples all carry distinct (pseudo-)labels: G-SimCLR's batch composition.

    Yields one list of `(index, seed)` pairs per batch (a DataLoader `batch_sampler`), the seeds as
    in `ResumableSampler`. Every rank builds the same *global* schedule from (seed, epoch) and takes
    its slice of each global batch, so uniqueness holds for the global batch (what NT-Xent sees when
    it gathers negatives across ranks), no communication is needed, and all ranks get the same number
    of batches (DDP would hang otherwise).

    The schedule: shuffle each label's members, then fill each global batch with one member of each
    of the `global_batch` labels that have the most members left (random tie-break), until fewer than
    `global_batch` labels have members left. Taking the largest first reaches `full_batch_bound`, the
    most fully distinct batches any schedule can make. The batch order and the order inside each
    batch are then shuffled. What happens to the members left over is `remainder`:
    "drop" leaves them out of this epoch (the epoch is `full_batch_bound` batches), "fill" shuffles
    them into extra batches that repeat labels, so an epoch is `N // global_batch` batches like a
    plain shuffled epoch (a same-budget comparison with SimCLR needs that).

    Args:
        labels: `[N]` int pseudo-label per dataset index (or None, then `set_labels` before iterating).
        num_samples: N, the dataset length.
        batch_size: per process.
        num_replicas, rank: process layout.
        seed: base seed of the schedule and of the per-draw augmentation seeds.
        remainder: "fill" or "drop".
    """

    REMAINDER = ("fill", "drop")

    def __init__(self, labels: np.ndarray | None, num_samples: int, batch_size: int, num_replicas: int = 1,
                 rank: int = 0, seed: int = 0, remainder: str = "fill"):
        super().__init__()
        if remainder not in self.REMAINDER:
            raise ValueError(f"remainder must be one of {self.REMAINDER}, got {remainder!r}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.num_replicas, self.rank, self.seed, self.remainder = num_replicas, rank, seed, remainder
        self.global_batch = batch_size * num_replicas
        self.epoch, self.start = 0, 0
        self.labels: np.ndarray | None = None
        self._cache: tuple[int, list[np.ndarray]] | None = None
        if labels is not None:
            self.set_labels(labels)

    def set_labels(self, labels: np.ndarray) -> None:
        """Use new pseudo-labels from the next epoch (or the current one, if not yet started)."""
        labels = np.asarray(labels)
        if labels.shape != (self.num_samples,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be an int array of shape ({self.num_samples},), got "
                             f"{labels.dtype} {labels.shape}")
        if labels.min() < 0:
            raise ValueError("labels must be >= 0")
        distinct = len(np.unique(labels))
        if distinct < self.global_batch:
            raise ValueError(
                f"{distinct} distinct labels cannot fill a global batch of {self.global_batch} with distinct labels; "
                f"use at least {self.global_batch} clusters (2-4x the global batch leaves few batches short)"
            )
        self.labels = labels.astype(np.int64)
        self._cache = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        """Skip the first `start` draws of this rank's epoch (resuming mid-epoch); whole batches only."""
        if start % self.batch_size:
            raise ValueError(f"start {start} is not a whole number of batches of {self.batch_size}")
        self.start = start // self.batch_size

    def batches_per_epoch(self, batch_size: int | None = None) -> int:
        """Batches each rank gets in a full epoch (the engine's steps-per-epoch arithmetic)."""
        if batch_size is not None and batch_size != self.batch_size:
            raise ValueError(f"this sampler makes batches of {self.batch_size}, not {batch_size}")
        if self.remainder == "fill":
            return self.num_samples // self.global_batch
        return full_batch_bound(np.bincount(self._labels()), self.global_batch)

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start

    def global_batches(self) -> list[np.ndarray]:
        """This epoch's schedule: a list of `[global_batch]` index arrays (the same on every rank)."""
        if self._cache is None or self._cache[0] != self.epoch:  # set_labels clears the cache
            self._cache = (self.epoch, self._schedule(np.random.default_rng([self.seed, self.epoch])))
        return self._cache[1]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.global_batches()[self.start:]:
            yield [(int(i), sample_seed(self.seed, self.epoch, int(i))) for i in batch[lo:hi]]

    def _labels(self) -> np.ndarray:
        if self.labels is None:
            raise RuntimeError("GuidedBatchSampler has no labels yet; call set_labels before iterating")
        return self.labels

    def _schedule(self, rng: np.random.Generator) -> list[np.ndarray]:
        labels, b = self._labels(), self.global_batch
        # members of each label, shuffled: a random permutation grouped by label (stable sort keeps it random)
        perm = rng.permutation(self.num_samples)
        members = perm[np.argsort(labels[perm], kind="stable")]
        counts = np.bincount(labels)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        left = counts.copy()
        batches = []
        while np.count_nonzero(left) >= b:
            # the b labels with the most members left; the uniform jitter < 1 only breaks ties
            chosen = np.argpartition(-(left + rng.random(len(left))), b - 1)[:b]
            batches.append(members[starts[chosen] + counts[chosen] - left[chosen]])
            left[chosen] -= 1
        if self.remainder == "fill":
            taken = np.arange(len(members)) - np.repeat(starts, counts) < np.repeat(counts - left, counts)
            rest = rng.permutation(members[~taken])
            batches += [rest[i:i + b] for i in range(0, len(rest) - b + 1, b)]
        order = rng.permutation(len(batches))
        return [rng.permutation(batches[i]) for i in order]
