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
- The SimCLR stage is this platform's SimCLR (any timm backbone, lightly's head and NT-Xent), not the
  official notebook's Keras CIFAR ResNet (n = 4) with a 256-128-50 head, SGD with cosine restarts
  and flip + weak jitter only; the CIFAR recipe runs it with solo-learn's SimCLR settings so that
  the two methods compare at one budget (ariG23498/G-SimCLR@bd77e7f, docs/recipe_sources.md).

Pseudo-labels are kept in the run directory, `pseudo_labels/epoch_XXXX.npy` (int64 `[N]` aligned
with dataset indices) with a JSON record beside each (`data/pseudo_labels.py`); a resumed run reads
them back instead of clustering again, so it sees exactly the batches an uninterrupted run saw. The
features clustered are the embedding contract's (`features.embed_dataset`): stage 1's bare backbone,
or this method's `embed` when re-clustering.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_platform import distributed
from ssl_platform.checkpoint.io import backbone_file, load_backbone, write_atomic
from ssl_platform.data.pseudo_labels import (
    cluster_sizes,
    kmeans_pseudo_labels,
    label_files,
    label_path,
    read_labels,
    weights_sha256,
)
from ssl_platform.data.samplers import GuidedBatchSampler
from ssl_platform.data.transforms import EvalTransform
from ssl_platform.features import embed_dataset
from ssl_platform.methods.simclr import SimCLR


class GSimCLR(SimCLR):
    """SimCLR (same backbone, head and NT-Xent loss) on guided batches of distinct pseudo-labels.

    Batch keys: SimCLR's `views` plus `index` (the dataset index, added by `TransformedDataset`).
    The engine asks `make_batch_sampler` for the training batch order; pseudo-labels are computed
    there (stage 1's encoder) and, with `recluster_every_epochs`, again in `on_epoch_start`.

    Args:
        encoder: stage 1, the run directory or `backbone.safetensors` of a `DenoisingAutoencoder`
            (any pretrained backbone works: its embeddings are clustered).
        image_size: side of the images the clustering reads (an `EvalTransform` with SimCLR's
            `in_chans` channels).
        mean, std: the normalisation stage 1 trained with (None: `EvalTransform`'s defaults).
        num_clusters: k; None gives 4 x the global batch.
        kmeans_iters: k-means iterations.
        remainder: what the sampler does with images left once fewer than a global batch of
            pseudo-labels have any: "fill" (extra batches that repeat labels; an epoch is as long as
            SimCLR's) or "drop" (left out of that epoch).
        recluster_every_epochs: 0 keeps stage 1's labels (the paper); N > 0 re-clusters this
            method's embeddings at the start of every N-th epoch (needs remainder="fill", because
            "drop" would change the epoch length the lr schedule was built for).
        feature_batch_size: images per forward pass while embedding the images to cluster.
        **simclr: `SimCLR`'s arguments (backbone, small_input, in_chans, backbone_kwargs, proj_*,
            temperature), with its defaults.
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
        **simclr: Any,
    ):
        super().__init__(**simclr)
        if remainder not in GuidedBatchSampler.REMAINDER:
            raise ValueError(f"remainder must be one of {GuidedBatchSampler.REMAINDER}, got {remainder!r}")
        if recluster_every_epochs and remainder != "fill":
            raise ValueError(
                "recluster_every_epochs needs remainder='fill': with 'drop' the number of batches depends on the "
                "clusters, and the lr schedule was built for a fixed epoch length"
            )
        self.encoder = str(encoder)
        self.transform = EvalTransform(size=image_size, channels=self.in_chans, mean=mean, std=std)
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

    def on_epoch_start(self, epoch: int) -> None:
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
        path = label_path(self._out_dir, epoch)
        expected = self._record(epoch)
        labels = read_labels(path, expected) if distributed.is_main() else None
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

    def _cluster(self, epoch: int, path: Path, expected: dict) -> np.ndarray:
        device = next(self.parameters()).device
        # every rank embeds its share and receives all features; rank 0 clusters and writes
        common = {"batch_size": self.feature_batch_size, "device": device, "caller": "G-SimCLR clustering"}
        if epoch == 0:
            encoder = load_backbone(self.encoder).to(device)
            feats, _ = embed_dataset(encoder, self._images, self.transform, **common)
        else:
            feats, _ = embed_dataset(self, self._images, self.transform, embed=self.embed, **common)
        labels = None
        if distributed.is_main():
            labels = kmeans_pseudo_labels(feats, self.k, seed=self._seed + epoch, iters=self.kmeans_iters)
            sizes = cluster_sizes(labels, self.k, self._sampler.global_batch)
            bound = sizes["distinct_batches_bound"]
            record = {**expected, "epoch": epoch, "kmeans_seed": self._seed + epoch, **sizes,
                      # "drop" ends the epoch at the bound; "fill" keeps a plain epoch's length
                      "batches_per_epoch": bound if self.remainder == "drop"
                      else self._sampler.num_samples // self._sampler.global_batch}
            for file, data in label_files(path, labels, record).items():
                write_atomic(file, data)
            print(f"[ssl_platform] G-SimCLR pseudo-labels for epoch {epoch}: {self.k} clusters of "
                  f"{sizes['cluster_size_min']}-{sizes['cluster_size_max']} images, {bound} fully distinct batches "
                  f"possible -> {path}", flush=True)
        return distributed.broadcast_object(labels)


def _show_simclrs_arguments() -> None:
    """Recipes are checked against the constructor before anything runs (`config.validate`, `--dry-run`):
    its signature names the valid keys, its annotations their types. Show SimCLR's arguments there
    too, so a misspelt or mistyped one is refused up front, not after the first stage has trained."""
    own = [p for p in inspect.signature(GSimCLR.__init__).parameters.values()
           if p.name != "self" and p.kind is not p.VAR_KEYWORD]
    shared = [p.replace(kind=p.KEYWORD_ONLY) for p in inspect.signature(SimCLR).parameters.values()]
    GSimCLR.__signature__ = inspect.Signature(own + shared)
    GSimCLR.__init__.__annotations__.update(typing.get_type_hints(SimCLR.__init__))


_show_simclrs_arguments()
