"""From dataset items to batch dicts.

Transforms return dicts of a method's batch keys (`{"views": [...]}`, `{"image": ...}`);
`TransformedDataset` applies one under the draw's seed and adds `label` and `index`, and torch's
`default_collate` stacks the dicts (a list of views becomes a list of `[B, C, H, W]` tensors).
Samples that already are dicts of batch keys (a `Table` row: `{"x_num", "x_cat"}`; a graph:
`{"graph": Data}`) need no transform; `collate` joins torch_geometric graphs into one `Batch` (a
disjoint union with a `batch` vector) and stacks everything else with `default_collate`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate


def _is_graph(value: Any) -> bool:
    return hasattr(value, "edge_index") and hasattr(value, "num_nodes")  # torch_geometric Data, duck-typed


def collate(items: list[Any]) -> Any:
    """`default_collate`, except that graph values of dict items become one torch_geometric `Batch`."""
    if items and isinstance(items[0], dict) and any(_is_graph(v) for v in items[0].values()):
        from torch_geometric.data import Batch

        graphs = [k for k, v in items[0].items() if _is_graph(v)]
        rest = default_collate([{k: v for k, v in item.items() if k not in graphs} for item in items])
        return {**rest, **{k: Batch.from_data_list([item[k] for item in items]) for k in graphs}}
    return default_collate(items)


def _label(label: Any) -> Any:
    """Class ids (Python or numpy ints, 0-d int tensors) as int; regression and multi-label targets
    (floats, vectors) as float32 tensors, so `default_collate` stacks either kind."""
    if isinstance(label, (int, np.integer)) or (isinstance(label, torch.Tensor) and label.ndim == 0
                                                 and not label.is_floating_point()):
        return int(label)
    return torch.as_tensor(label, dtype=torch.float32)


class TransformedDataset(Dataset):
    """`dataset[i] = (sample, label)` -> `{**transform(sample), "label": label, "index": i}`.

    Indexed by `(index, seed)` (from `ResumableSampler`), it seeds Python's and torch's RNG for the
    transform inside a forked RNG scope: the views depend only on the seed, and the caller's RNG
    (the training process's, when num_workers=0) is left exactly as it was.

    Args:
        dataset: a map-style dataset returning `(sample, label)`.
        transform: sample -> dict of batch keys; None passes a dict sample through as the batch keys
            (`{"x_num": ..., "x_cat": ...}` of a `Table`) and any other sample as `{"image": sample}`.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], dict] | None = None):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        sample, label = self.dataset[index]
        if self.transform is None:
            out = dict(sample) if isinstance(sample, dict) else {"image": sample}
        elif seed is None:
            out = self.transform(sample)
        else:
            out = self._seeded(sample, seed)
        if not isinstance(out, dict):
            raise TypeError(
                f"transform {type(self.transform).__name__} returned {type(out).__name__}; transforms must "
                "return a dict of batch keys such as {'views': [...]} or {'image': tensor}"
            )
        return {**out, "label": _label(label), "index": index}

    def _seeded(self, sample: Any, seed: int) -> dict:
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                return self.transform(sample)
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
