"""Pseudo-labels for guided batches: k-means cluster ids of a dataset's features, and the files a run keeps.

G-SimCLR (`methods/gsimclr.py`) clusters features of every training image and lets each batch take at
most one image per cluster (`samplers.GuidedBatchSampler`). A run keeps each clustering in its
directory, `pseudo_labels/epoch_XXXX.npy` (int64 `[N]` aligned with dataset indices), with a JSON
record beside it: the settings it was clustered with (`read_labels` refuses labels clustered with
other ones) and the cluster sizes. A resumed run reads the labels back instead of clustering again,
so it sees exactly the batches an uninterrupted run saw.

`label_files` gives the files' bytes; the caller writes them atomically (`checkpoint.io.write_atomic`,
a layer above the data).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import faiss
import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ssl_platform.data.samplers import full_batch_bound


def kmeans_pseudo_labels(features: torch.Tensor, num_clusters: int, seed: int = 0, iters: int = 20,
                         restarts: int = 1) -> np.ndarray:
    """faiss k-means on L2-normalised features: `features: [N, D]` -> cluster ids int64 `[N]`.

    Every point takes part in every iteration (faiss would otherwise subsample to 256 per centroid),
    `restarts` random initialisations keep the lowest objective (scikit-learn's `n_init`), and the
    result is a pure function of the features and the seed.
    """
    n, d = features.shape
    if num_clusters > n:
        raise ValueError(f"cannot make {num_clusters} clusters from {n} samples; lower num_clusters")
    x = np.ascontiguousarray(nn.functional.normalize(features.float(), dim=1).numpy(), dtype=np.float32)
    kmeans = faiss.Kmeans(d, num_clusters, niter=iters, seed=seed, verbose=False, max_points_per_centroid=n,
                          min_points_per_centroid=1, nredo=restarts, gpu=faiss.get_num_gpus() > 0)
    kmeans.train(x)
    _, assign = kmeans.index.search(x, 1)
    return assign[:, 0].astype(np.int64)


def weights_sha256(path: str | Path) -> str:
    """sha256 over a safetensors file's tensors (names, dtypes, shapes, bytes in name order).

    Not the file's own hash: safetensors writes its metadata in no fixed order, so re-exporting the
    same weights (a finished first stage resumed at its last step) gives other bytes. A record names
    the encoder by it, so a retrained encoder never reuses stale labels.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(str(path)).items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def label_path(run_dir: str | Path, epoch: int) -> Path:
    """Where a run keeps the labels clustered at the start of `epoch`."""
    return Path(run_dir) / "pseudo_labels" / f"epoch_{epoch:04d}.npy"


def read_labels(path: Path, expected: dict) -> np.ndarray | None:
    """The labels at `path` if they and their record are there, else None.

    Raises:
        RuntimeError: the record's settings differ from `expected` (names the differences).
    """
    meta = path.with_suffix(".json")
    if not path.exists() or not meta.exists():
        return None
    saved = json.loads(meta.read_text())
    differ = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
    if differ:
        raise RuntimeError(
            f"{path} was clustered with other settings ({differ}, saved vs now); use another train.out_dir "
            "or delete the pseudo_labels directory to cluster again"
        )
    return np.load(path, allow_pickle=False)  # a run directory may come from elsewhere: never unpickle


def cluster_sizes(labels: np.ndarray, num_clusters: int, global_batch: int) -> dict[str, int]:
    """The record's statistics: smallest and largest cluster, empty clusters, and how many global batches
    of distinct labels the clusters allow (`samplers.full_batch_bound`)."""
    sizes = np.bincount(labels, minlength=num_clusters)
    return {"cluster_size_min": int(sizes.min()), "cluster_size_max": int(sizes.max()),
            "empty_clusters": int((sizes == 0).sum()), "distinct_batches_bound": full_batch_bound(sizes, global_batch)}


def label_files(path: Path, labels: np.ndarray, record: dict) -> dict[Path, bytes]:
    """`{path: the labels as .npy, path.json: the record}`, to be written atomically."""
    buf = io.BytesIO()
    np.save(buf, labels)
    return {path: buf.getvalue(), path.with_suffix(".json"): json.dumps(record, indent=1).encode()}
