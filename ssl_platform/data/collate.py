"""From dataset items to batch dicts.

Transforms return dicts of a method's batch keys (`{"views": [...]}`, `{"image": ...}`);
`TransformedDataset` applies one under the draw's seed and adds `label` and `index`, and torch's
`default_collate` stacks the dicts (a list of views becomes a list of `[B, C, H, W]` tensors).
Samples that already are dicts of batch keys (a `Table` row: `{"x_num", "x_cat"}`; a graph:
`{"graph": Data}`) need no transform; `collate` joins torch_geometric graphs into one `Batch` (a
disjoint union with a `batch` vector) and stacks everything else with `default_collate`.

Bad samples: a sample that cannot be read or transformed raises `BadSampleError`, naming the dataset,
the index, where the sample comes from and what to do. A dataset names a sample's origin with an
optional method `sample_source(index) -> str` (a file path, a manifest line, a table row; `ImageFolder`,
`ImageTextPairs`, `Table`, `Molecules`, the multispectral sets... have one). With
`on_bad_sample="skip"` the sample is replaced by the next good index instead and recorded in a
JSON-lines skip log (`count_skipped` reads it back).
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

ON_BAD_SAMPLE = ("error", "skip")
# this many bad samples in a row are not a few damaged files but a wrong root, a wrong transform or a
# dataset that cannot be read at all: stop there rather than probe (and open) every file of the set
MAX_CONSECUTIVE_BAD = 1000
REMEDY = "remove or fix the file, or set data.on_bad_sample=skip to replace bad samples by the next good one"
# torch re-raises a worker's exception as `cls("Caught <cls> in DataLoader worker process N.\nOriginal
# Traceback ...\n<module>.<cls>: <message>")` (torch/_utils.py, ExceptionWrapper.reraise)
_WORKER_HEADER = re.compile(r"Caught BadSampleError (in DataLoader worker process \d+)\.")
_OUR_LINE = re.compile(r"^(?:[\w.]+\.)?BadSampleError: (.*)$", re.MULTILINE)


class BadSampleError(ValueError):
    """A sample that cannot be read or transformed; the message says which, from where, and what to do.

    A ValueError, so the CLI prints it as one `error: ...` line. Built by torch's DataLoader from a
    worker's whole traceback, it keeps only our one-line message and the worker number.

    Attributes:
        index: the sample's index (None when rebuilt from a worker's traceback).
        source: what `sample_source(index)` said, or None.
        cause: the original error as "Type: message", one line.
    """

    def __init__(self, message: str, index: int | None = None, source: str | None = None, cause: str = ""):
        worker = _WORKER_HEADER.match(message)
        ours = _OUR_LINE.findall(message) if worker else []
        if ours:
            message = f"{ours[-1]} (raised {worker.group(1)})"
        super().__init__(message)
        self.index, self.source, self.cause = index, source, cause


def _one_line(err: BaseException) -> str:
    """`Type: message` on one line: the skip log holds one JSON object a line and the CLI prints one line."""
    return " ".join(f"{type(err).__name__}: {err}".split())


def count_skipped(skip_log: str | Path) -> int:
    """Distinct sample indices in a skip log written by `TransformedDataset(on_bad_sample="skip")`; 0 when
    the file does not exist (nothing was skipped)."""
    path = Path(skip_log)
    if not path.is_file():
        return 0
    indices = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            indices.add(int(json.loads(line)["index"]))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"skip log {path} line {number} is not a JSON object with an 'index' ({err}); "
                             "TransformedDataset writes one per skipped sample: delete the file or fix the line") from err
    return len(indices)


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
    (the training process's, when num_workers=0) is left exactly as it was. A transform with a
    `seeded(sample, seed)` method is called through it instead and draws from its own generator.

    A sample whose reading or transform raises is a `BadSampleError` naming the dataset, the index,
    the sample's source (when the dataset has `sample_source(index) -> str`) and the original error.
    With `on_bad_sample="skip"` it is replaced by the next index that works (index + 1, + 2, ...,
    modulo the length) transformed with the same seed: batches keep their size, and a resumed run
    sees the same data as an uninterrupted one. The item's `index` is then the replacement's.

    Args:
        dataset: a map-style dataset returning `(sample, label)`.
        transform: sample -> dict of batch keys; None passes a dict sample through as the batch keys
            (`{"x_num": ..., "x_cat": ...}` of a `Table`) and any other sample as `{"image": sample}`.
        on_bad_sample: "error" (stop at a bad sample) or "skip" (replace it, log it, go on).
        skip_log: with "skip", the file that gets one JSON line `{"index", "source", "error"}` per skip
            (appended atomically, so DataLoader workers can share it); None logs to stderr only.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], dict] | None = None,
                 on_bad_sample: str = "error", skip_log: str | Path | None = None):
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ValueError(f"on_bad_sample must be one of {list(ON_BAD_SAMPLE)}, got {on_bad_sample!r}: 'error' "
                             "stops at a sample that cannot be read, 'skip' replaces it by the next good one")
        self.dataset = dataset
        self.transform = transform
        self.on_bad_sample = on_bad_sample
        self.skip_log = Path(skip_log) if skip_log is not None else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            return self._item(index, seed)
        except BadSampleError as err:
            if self.on_bad_sample == "error":
                raise
            return self._replace(index, seed, err)

    def _item(self, index: int, seed: int | None) -> dict:
        """One item; a failure to read or transform it is a BadSampleError."""
        try:
            sample, label = self.dataset[index]
            label = _label(label)
        except Exception as err:
            if isinstance(err, IndexError) and not -len(self) <= index < len(self):
                raise  # out of range: the caller's bug (or the end of a plain iteration), not bad data
            raise self._bad(index, "cannot be read", err) from err
        try:
            if self.transform is None:
                out = dict(sample) if isinstance(sample, dict) else {"image": sample}
            elif seed is None:
                out = self.transform(sample)
            else:
                out = self._seeded(sample, seed)
        except Exception as err:
            # a function's own name; a transform object's class name
            name = getattr(self.transform, "__name__", None) or type(self.transform).__name__
            raise self._bad(index, f"fails in transform {name}", err) from err
        if not isinstance(out, dict):
            raise TypeError(
                f"transform {type(self.transform).__name__} returned {type(out).__name__}; transforms must "
                "return a dict of batch keys such as {'views': [...]} or {'image': tensor}"
            )
        return {**out, "label": label, "index": index}

    def _source(self, index: int) -> str | None:
        describe = getattr(self.dataset, "sample_source", None)
        if describe is None:
            return None
        try:
            return str(describe(index))
        except Exception:  # noqa: BLE001 - naming the source is a courtesy: it must never hide the real error
            return None

    def _bad(self, index: int, what: str, err: BaseException) -> BadSampleError:
        source, cause = self._source(index), _one_line(err)
        where = f" ({source})" if source else ""
        return BadSampleError(f"{type(self.dataset).__name__} sample {index}{where} {what}: {cause}. To go on: {REMEDY}",
                              index=index, source=source, cause=cause)

    def _replace(self, index: int, seed: int | None, err: BadSampleError) -> dict:
        """The item of the first good index after `index`, with the skip logged; raises when none is found."""
        n = len(self)
        for step in range(1, min(n, MAX_CONSECUTIVE_BAD)):
            try:
                item = self._item((index + step) % n, seed)
            except BadSampleError:
                continue  # logged when it is drawn itself: one line per skipped draw
            self._log_skip(err, item["index"])
            return item
        self._log_skip(err, None)
        span = f"every one of its {n} samples" if n <= MAX_CONSECUTIVE_BAD else \
            f"{MAX_CONSECUTIVE_BAD} samples in a row from index {index}"
        raise BadSampleError(
            f"{type(self.dataset).__name__}: {span} cannot be read or transformed, so on_bad_sample=skip has nothing "
            f"to replace sample {index} with; this is not a few damaged files: check the dataset's root and "
            f"settings and the transform (sample {index}: {err.cause})", index=index, source=err.source, cause=err.cause)

    def _log_skip(self, err: BadSampleError, replacement: int | None) -> None:
        """One JSON line in the skip log (a single O_APPEND write, so lines of several workers never mix)
        and one line on stderr."""
        if self.skip_log is not None:
            # int(): samplers may yield numpy integers, which json cannot write
            line = json.dumps({"index": int(err.index), "source": err.source, "error": err.cause}) + "\n"
            self.skip_log.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.skip_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        where = f" ({err.source})" if err.source else ""
        instead = f"replaced by sample {replacement}" if replacement is not None else "no good sample to replace it"
        logged = f"; logged in {self.skip_log}" if self.skip_log is not None else ""
        print(f"[ssl_platform] skipped bad sample {err.index}{where} of {type(self.dataset).__name__}, {instead}: "
              f"{err.cause}{logged}", file=sys.stderr, flush=True)

    def _seeded(self, sample: Any, seed: int) -> dict:
        if hasattr(self.transform, "seeded"):
            # a transform that draws from its own generator (`seeded(sample, seed)`) leaves the global RNGs
            # alone: forking and seeding them per sample costs more than the draws themselves
            return self.transform.seeded(sample, seed)
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
