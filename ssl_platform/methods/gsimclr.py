"""G-SimCLR: SimCLR on batches in which no two images share a pseudo-label.

Chakraborty, Gosthipaty, Paul. "G-SimCLR: Self-Supervised Contrastive Learning with Guided
Projection via Pseudo Labelling", ICDM workshops 2020.

NT-Xent pushes apart every pair of images in a batch, including pairs of one class. G-SimCLR keeps
the loss and changes what a batch holds: a denoising autoencoder (stage 1, `methods/dae.py`) embeds
every training image, k-means on its L2-normalised pooled latents gives pseudo-labels, and each
(global) batch takes at most one image per pseudo-label (`data.samplers.GuidedBatchSampler`), so
fewer same-class images act as negatives.

Where this differs from the paper (see docs/methods.md):
- faiss k-means (on GPU when faiss has one) instead of scikit-learn's.
- k defaults to 4x the global batch, not k = batch size: with k = B uneven clusters leave most
  batches with repeats (a batch can only be distinct while every cluster still has members).
- The guided order is reshuffled every epoch from (seed, epoch); the paper fixes one order.
- `recluster_every_epochs` re-clusters on this SimCLR backbone's own features every N epochs, a
  variant the paper does not have.

Pseudo-labels are kept in the run directory, `pseudo_labels/epoch_XXXX.npy` (int64 `[N]` aligned
with dataset indices) with a JSON record beside each; a resumed run reads them back instead of
clustering again, so it sees exactly the batches an uninterrupted run saw.
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

from ssl_platform import distributed
from ssl_platform.checkpoint.io import backbone_file, load_backbone, write_atomic
from ssl_platform.data.samplers import GuidedBatchSampler, full_batch_bound
from ssl_platform.data.transforms import EvalTransform
from ssl_platform.methods.simclr import SimCLR


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
    same weights (a finished first stage resumed at its last step) gives other bytes.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(str(path)).items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class GSimCLR(SimCLR):
    """SimCLR (same backbone, head and NT-Xent loss) on guided batches of distinct pseudo-labels.

    Batch keys: SimCLR's `views` plus `index` (the dataset index, added by `TransformedDataset`).
    The engine asks `make_batch_sampler` for the training batch order; pseudo-labels are computed
    there (stage 1's encoder) and, with `recluster_every_epochs`, again in `on_epoch_start`.

    Args:
        encoder: stage 1, the run directory or `backbone.safetensors` of a `DenoisingAutoencoder`
            (any pretrained backbone works: its pooled features are clustered).
        image_size: side of the images the clustering reads (an `EvalTransform` with `in_chans`
            channels).
        mean, std: the normalisation stage 1 trained with (None: `EvalTransform`'s defaults).
        num_clusters: k; None gives 4 x the global batch.
        kmeans_iters: k-means iterations.
        remainder: what the sampler does with images left once fewer than a global batch of
            pseudo-labels have any: "fill" (extra batches that repeat labels; an epoch is as long as
            SimCLR's) or "drop" (left out of that epoch).
        recluster_every_epochs: 0 keeps stage 1's labels (the paper); N > 0 re-clusters this
            backbone's features at the start of every N-th epoch (needs remainder="fill", because
            "drop" would change the epoch length the lr schedule was built for).
        feature_batch_size: images per forward pass while extracting features to cluster.
        backbone, small_input, in_chans, backbone_kwargs, proj_*, temperature: as for `SimCLR`.
    """

    def __init__(
        self,
        encoder: str,
        image_size: int,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        num_clusters: int | None = None,
        kmeans_iters: int = 20,
        remainder: str = "fill",
        recluster_every_epochs: int = 0,
        feature_batch_size: int = 512,
        backbone: str | nn.Module = "resnet18",
        small_input: bool = False,
        in_chans: int = 3,
        backbone_kwargs: dict | None = None,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        proj_layers: int = 2,
        proj_batch_norm: bool = True,
        temperature: float = 0.1,
    ):
        super().__init__(backbone, small_input, in_chans, backbone_kwargs, proj_hidden_dim, proj_dim, proj_layers,
                         proj_batch_norm, temperature)
        if remainder not in GuidedBatchSampler.REMAINDER:
            raise ValueError(f"remainder must be one of {GuidedBatchSampler.REMAINDER}, got {remainder!r}")
        if recluster_every_epochs and remainder != "fill":
            raise ValueError(
                "recluster_every_epochs needs remainder='fill': with 'drop' the number of batches depends on the "
                "clusters, and the lr schedule was built for a fixed epoch length"
            )
        self.encoder = str(encoder)
        self.transform = EvalTransform(size=image_size, channels=in_chans, mean=mean, std=std)
        self.num_clusters, self.kmeans_iters = num_clusters, kmeans_iters
        self.remainder, self.recluster_every_epochs = remainder, recluster_every_epochs
        self.feature_batch_size = feature_batch_size
        self._sampler: GuidedBatchSampler | None = None
        self._labels_epoch = -1
        self._labels = torch.empty(0, dtype=torch.long)  # on the model's device, for the batch statistic

    # ---- the engine's hooks

    def make_batch_sampler(self, dataset, *, batch_size: int, num_replicas: int, rank: int, seed: int,
                           out_dir: str | Path) -> GuidedBatchSampler:
        """Stage 1's pseudo-labels (read back from the run directory, or clustered now) and the sampler.

        Args:
            dataset: the training `TransformedDataset`; `.dataset` holds the raw images that are clustered.
        """
        self._images, self._out_dir, self._seed = dataset.dataset, Path(out_dir), seed
        self._sampler = GuidedBatchSampler(None, len(dataset), batch_size, num_replicas, rank, seed, self.remainder)
        self.k = self.num_clusters or 4 * self._sampler.global_batch
        self._use_labels(0, now=0)
        return self._sampler

    def on_epoch_start(self, epoch: int, loader) -> None:
        if self.recluster_every_epochs:
            self._use_labels(epoch - epoch % self.recluster_every_epochs, now=epoch)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        out = super().forward(batch)
        index = batch["index"]
        if self._labels.device != index.device:
            self._labels = self._labels.to(index.device)
        # share of distinct pseudo-labels in this process's batch: 1.0 on every fully guided batch
        distinct = torch.unique(self._labels[index]).numel() / index.numel()
        out["distinct_labels"] = torch.tensor(distinct, device=index.device)
        return out

    # ---- pseudo-labels

    def _use_labels(self, epoch: int, now: int) -> None:
        """Give the sampler the labels clustered at the start of `epoch` (0: stage 1's encoder), read
        back from the run directory if they are there; `now` is the epoch about to run."""
        if epoch == self._labels_epoch:
            return
        path = self._out_dir / "pseudo_labels" / f"epoch_{epoch:04d}.npy"
        expected = self._record(epoch)
        labels = self._read(path, expected) if distributed.is_main() else None
        labels = distributed.broadcast_object(labels)
        if labels is None:
            if epoch < now:  # resuming after a re-clustering whose file is gone: the backbone has moved on
                raise RuntimeError(f"{path} is missing; it was written when epoch {epoch} began and is needed "
                                   "to resume. Restore it, or start the run again in a new train.out_dir")
            labels = self._cluster(epoch, path, expected)
        self._sampler.set_labels(labels)
        self._labels, self._labels_epoch = torch.as_tensor(labels), epoch

    def _record(self, epoch: int) -> dict:
        # the encoder's weights, not its path: a retrained stage 1 must not reuse stale labels
        source = (f"stage 1 encoder, weights sha256 {weights_sha256(backbone_file(self.encoder))}" if epoch == 0
                  else f"this run's backbone at the start of epoch {epoch}")
        return {"num_clusters": self.k, "seed": self._seed, "kmeans_iters": self.kmeans_iters,
                "num_samples": len(self._images), "source": source}

    def _read(self, path: Path, expected: dict) -> np.ndarray | None:
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

    def _cluster(self, epoch: int, path: Path, expected: dict) -> np.ndarray:
        from ssl_platform.evaluation.features import extract_features

        device = next(self.parameters()).device
        net = load_backbone(self.encoder).to(device) if epoch == 0 else self.backbone
        # every rank extracts its share and receives all features; rank 0 clusters and writes
        feats, _ = extract_features(net, self._images, self.transform, batch_size=self.feature_batch_size,
                                    device=device)
        labels = None
        if distributed.is_main():
            labels = kmeans_pseudo_labels(feats, self.k, seed=self._seed + epoch, iters=self.kmeans_iters)
            sizes = np.bincount(labels, minlength=self.k)
            bound = full_batch_bound(sizes, self._sampler.global_batch)
            record = {**expected, "epoch": epoch, "kmeans_seed": self._seed + epoch, "cluster_size_min": int(sizes.min()),
                      "cluster_size_max": int(sizes.max()), "empty_clusters": int((sizes == 0).sum()),
                      "distinct_batches_bound": bound,
                      # "drop" ends the epoch at the bound; "fill" keeps a plain epoch's length
                      "batches_per_epoch": bound if self.remainder == "drop"
                      else self._sampler.num_samples // self._sampler.global_batch}
            buf = io.BytesIO()
            np.save(buf, labels)
            write_atomic(path, buf.getvalue())
            write_atomic(path.with_suffix(".json"), json.dumps(record, indent=1).encode())
            print(f"[ssl_platform] G-SimCLR pseudo-labels for epoch {epoch}: {self.k} clusters of "
                  f"{sizes.min()}-{sizes.max()} images, {bound} fully distinct batches possible -> {path}", flush=True)
        return distributed.broadcast_object(labels)
