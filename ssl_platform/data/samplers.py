"""Samplers. `ResumableSampler` is the engine's: a DistributedSampler order that can start mid-epoch
and hands every draw its own seed, so augmentations are a pure function of (seed, epoch, index).

That makes a resumed run see exactly the views an uninterrupted run would have seen, whatever the
number of data-loader workers, and makes a sample's views the same on any number of processes.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import DistributedSampler, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one draw of dataset item `index` in `epoch`."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


class ResumableSampler(Sampler):
    """Yields `(index, seed)` pairs: torch's DistributedSampler order, skippable to a position.

    Args:
        num_samples: dataset length.
        num_replicas, rank: process layout (1, 0 for a single process).
        shuffle: reshuffle every epoch (`set_epoch`).
        seed: base seed for the order and for the per-draw augmentation seeds.
        drop_last: drop the tail so every rank gets the same count (no padding duplicates).
    """

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = True):
        super().__init__()
        self.order = DistributedSampler(range(num_samples), num_replicas=num_replicas, rank=rank,
                                        shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def set_start(self, start: int) -> None:
        """Skip the first `start` draws of this rank's epoch (resuming mid-epoch)."""
        self.start = start

    def __len__(self) -> int:
        return len(self.order) - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(self.order)[self.start:]
        for index in indices:
            yield index, sample_seed(self.seed, self.epoch, index)
