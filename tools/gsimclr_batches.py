"""How much G-SimCLR's guided batches change what SimCLR's loss sees, measured against true labels.

    python tools/gsimclr_batches.py runs/gsimclr_resnet18_fmnist_2ep [--dataset fashion-mnist]

For every pseudo-label file of the run (`pseudo_labels/epoch_XXXX.npy`) it prints how well the
clusters agree with the true classes (NMI, purity) and the share of same-class pairs among the
negatives of a batch, for the guided schedule and for a plain shuffled epoch of the same batch size
(the SimCLR baseline), and the floor no batch composition can go below. That share is what
G-SimCLR sets out to lower.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from sklearn.metrics import normalized_mutual_info_score

from ssl_platform.data import datasets
from ssl_platform.data.samplers import GuidedBatchSampler

DATASETS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}


def same_class_negative_share(batches: list[np.ndarray], classes: np.ndarray) -> float:
    """Mean over batches of (pairs of distinct images with one class) / (all pairs of distinct images)."""
    shares = []
    for batch in batches:
        counts = np.bincount(classes[batch])
        n = len(batch)
        shares.append((counts * (counts - 1)).sum() / (n * (n - 1)))
    return float(np.mean(shares))


def balanced_floor(batch: int, num_classes: int) -> float:
    """The lowest same-class share any batch of `batch` images can have: classes as even as possible."""
    counts = np.full(num_classes, batch // num_classes)
    counts[: batch % num_classes] += 1
    return float((counts * (counts - 1)).sum() / (batch * (batch - 1)))


def purity(labels: np.ndarray, classes: np.ndarray) -> float:
    """Share of images whose cluster's majority class is their own class."""
    table = np.zeros((labels.max() + 1, classes.max() + 1), dtype=np.int64)
    np.add.at(table, (labels, classes), 1)
    return float(table.max(axis=1).sum() / len(labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="fashion-mnist")
    args = parser.parse_args()

    classes = np.asarray(getattr(datasets, DATASETS[args.dataset])(split="train").targets)
    config = OmegaConf.to_container(OmegaConf.load(args.run / "config.yaml"), resolve=True)
    batch = int(config["data"]["batch_size"])
    seed = int(config["train"]["seed"])
    shuffled = np.random.default_rng(seed).permutation(len(classes))
    plain = [shuffled[i:i + batch] for i in range(0, len(classes) - batch + 1, batch)]
    print(f"{args.run}: batch {batch}, {len(classes)} images, {classes.max() + 1} classes")
    print(f"  shuffled batches (SimCLR): same-class share of negative pairs {same_class_negative_share(plain, classes):.4f}; "
          f"the floor (every batch perfectly class-balanced) {balanced_floor(batch, classes.max() + 1):.4f}")
    for path in sorted((args.run / "pseudo_labels").glob("epoch_*.npy")):
        labels = np.load(path, allow_pickle=False)
        sampler = GuidedBatchSampler(labels, len(labels), batch, seed=seed, remainder=config["method"]["remainder"])
        guided = sampler.global_batches()
        print(f"  {path.name}: k={labels.max() + 1}, NMI with the classes {normalized_mutual_info_score(classes, labels):.3f}, "
              f"purity {purity(labels, classes):.3f}")
        print(f"    same-class share of negative pairs: guided {same_class_negative_share(guided, classes):.4f}")
        print(f"    same-pseudo-label share of negative pairs: shuffled {same_class_negative_share(plain, labels):.5f}, "
              f"guided {same_class_negative_share(guided, labels):.5f}")


if __name__ == "__main__":
    main()
