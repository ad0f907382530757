"""Protocols that train through the engine: fine-tuning and the SGD linear probe on images.

Both put a linear head on a copy of the backbone and call `engine.trainer.fit`, so they get
everything pretraining has (DDP under torchrun, precision, schedules, checkpoints and resume, logs).
The head is a classifier (`Classifier`, top-1) or, for regression tasks, a regressor of standardised
targets (`Regressor`, MSE; RMSE and R² in the targets' units), both in `finetune_heads.py`:

- **fine-tune** trains every parameter; options are the MAE/BEiT recipe's [0] layer-wise lr decay
  (for ViTs and any timm model with a `group_matcher`), drop-path and label smoothing;
- **linear_sgd** freezes the backbone (eval mode, so BatchNorm statistics stay put) and trains only
  the head on augmented images (DINO/MAE style [1]), for data whose features do not fit in memory;
- either can train with a noise-robust loss from `robust_losses.py` (GCE, SCE, ELR).

Fine-tuning a random init is supervised training from scratch at the same budget, the baseline the
suite compares against.

- [0]: He et al., Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
- [1]: Caron et al., Emerging Properties in Self-Supervised Vision Transformers, 2021,
  https://arxiv.org/abs/2104.14294
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ssl_platform import distributed
from ssl_platform.checkpoint.io import load_state_strict
from ssl_platform.data.collate import TransformedDataset
from ssl_platform.engine.rng import seed_everything
from ssl_platform.engine.trainer import TrainConfig, fit
from ssl_platform.evaluation.features import extract_features
from ssl_platform.evaluation.finetune_heads import Classifier, LinearHead, Regressor
from ssl_platform.evaluation.regression import regression_metrics
from ssl_platform.models.backbones import from_spec, spec

OPTIMIZERS = ("adamw", "sgd")
KINDS = ("classification", "regression")


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` measured on the (clean) test set after the last epoch, and the run directory.

    `metrics`: {"top1": %} for classification, {"rmse", "r2"} (`regression.regression_metrics`) for regression.
    """

    metrics: dict[str, float]
    steps: int
    out_dir: str

    @property
    def test_accuracy(self) -> float:
        """Top-1 % (classification)."""
        return self.metrics["top1"]


def _trainable_copy(backbone: nn.Module, drop_path: float) -> nn.Module:
    """A copy to train, so the caller's backbone (shared by other protocols) is never changed.

    timm only builds DropPath layers when `drop_path_rate > 0` at creation, so for drop-path the
    architecture is rebuilt from its spec and the weights are loaded into it.
    """
    if drop_path <= 0:
        return copy.deepcopy(backbone)
    arch = spec(backbone)
    if not arch:
        raise ValueError(
            "drop_path needs a backbone built by ssl_platform (its spec names the architecture); "
            "set drop_path: 0 for this backbone"
        )
    rebuilt = from_spec({**arch, "drop_path_rate": drop_path})
    load_state_strict(rebuilt, backbone.state_dict(), "the backbone being fine-tuned")
    return rebuilt.to(next(backbone.parameters()).device)


def finetune(
    backbone: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    *,
    train_transform: Callable[[Any], dict],
    test_transform: Callable[[Any], dict],
    num_classes: int,
    out_dir: str | Path,
    kind: str = "classification",
    freeze_backbone: bool = False,
    loss: str = "none",
    loss_kwargs: dict | None = None,
    label_smoothing: float = 0.0,
    layer_decay: float | None = None,
    drop_path: float = 0.0,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    epochs: int = 10,
    min_steps: int = 0,
    warmup_epochs: float = 1.0,
    batch_size: int = 128,
    num_workers: int = 0,
    precision: str = "auto",
    seed: int = 0,
    identity: dict | None = None,
    device: str | torch.device = "cpu",
) -> FinetuneResult:
    """Train a classifier (or regressor) on `train_set` through the engine and score it on `test_set`.

    Args:
        backbone: timm contract; copied, never modified.
        train_set: `dataset[i] -> (sample, label)`, labels possibly noisy (see `LabelledView`).
        test_set: `dataset[i] -> (sample, label)` with clean labels.
        train_transform, test_transform: sample -> `{"image": [C, H, W]}`.
        num_classes: classifier outputs (ignored for regression).
        out_dir: the engine's run directory (checkpoints, metrics.jsonl, TensorBoard); a finished
            run with the same settings is resumed, i.e. not trained again.
        kind: "classification" (`Classifier`, top-1) or "regression" (`Regressor`: float targets `[N]`
            or `[N, T]`, standardised by `train_set`'s mean and std; RMSE and R² on test). Regression
            takes loss "none" (MSE) only; the robust losses are for noisy class labels.
        freeze_backbone: True is the SGD linear probe, False fine-tuning.
        loss, loss_kwargs, label_smoothing, layer_decay: see `Classifier`.
        drop_path: stochastic depth rate while training.
        optimizer: "adamw" or "sgd" (momentum 0.9, Nesterov).
        lr: per 256 samples of global batch (the engine's linear rule).
        epochs, warmup_epochs, batch_size (per process), num_workers, precision: as in `TrainConfig`.
        min_steps: train more epochs when `epochs` would give fewer optimizer steps, so a small
            labelled subset (1%, 10%) still trains (SimCLR fine-tunes 1% for 60 epochs, 10% for 30).
        seed: head init and data order.
        identity: extra values written to the run's config (e.g. the backbone's sha256), so a run
            directory is never resumed for another backbone.
        device: where evaluation runs; training runs where the engine puts it (CUDA when present).

    Returns:
        `FinetuneResult`.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"finetune optimizer {optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if kind not in KINDS:
        raise ValueError(f"finetune kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "regression" and (loss != "none" or label_smoothing):
        raise ValueError(f"regression fine-tuning trains with MSE: loss must be 'none' and label_smoothing 0, got "
                         f"loss {loss!r}, label_smoothing {label_smoothing}")
    seed_everything(seed)  # the head's init is part of the protocol
    trainable = _trainable_copy(backbone, drop_path)
    if kind == "regression":
        targets = _targets(train_set)
        if not torch.isfinite(targets).all():  # else the standardisation itself is NaN and every loss with it
            bad = int((~torch.isfinite(targets.reshape(len(targets), -1))).any(1).sum())
            raise ValueError(f"regression fine-tuning: {bad} of {len(targets)} training targets are NaN or inf; drop "
                             "or fill those samples in the dataset")
        flat = targets.reshape(len(targets), -1)
        method = Regressor(trainable, flat.mean(0), flat.std(0) if len(flat) > 1 else torch.ones(flat.shape[1]),
                           scalar=targets.ndim == 1, freeze_backbone=freeze_backbone, layer_decay=layer_decay)
    else:
        method = Classifier(
            trainable, num_classes, len(train_set), loss=loss, label_smoothing=label_smoothing,
            freeze_backbone=freeze_backbone, layer_decay=layer_decay, loss_kwargs=loss_kwargs,
        )

    def make_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
        if optimizer == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)

    # a small labelled subset still makes one step per epoch on every process
    batch_size = max(1, min(batch_size, len(train_set) // distributed.world_size()))
    steps_per_epoch = max(1, len(train_set) // (batch_size * distributed.world_size()))
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    settings = {
        "protocol": "linear_sgd" if freeze_backbone else "finetune", "kind": kind, "loss": loss, "loss_kwargs": loss_kwargs,
        "label_smoothing": label_smoothing, "layer_decay": layer_decay, "drop_path": drop_path,
        "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay, "epochs": epochs,
        "batch_size": batch_size, "seed": seed, "num_train": len(train_set), **(identity or {}),
    }
    cfg = TrainConfig(
        epochs=epochs, warmup_epochs=warmup_epochs, min_lr=0.0, precision=precision, seed=seed,
        out_dir=str(out_dir), resume="auto", save_every_steps=10**9, log_every_steps=10,
    )
    result = fit(
        method, TransformedDataset(train_set, train_transform), make_optimizer, cfg, out_dir=out_dir,
        batch_size=batch_size, num_workers=num_workers, recipe=settings,
    )
    if kind == "regression":
        pred, target = _outputs(method, test_set, test_transform, batch_size, num_workers, device)
        metrics = regression_metrics(pred[:, 0] if method.scalar else pred, target)
    else:
        metrics = {"top1": classifier_accuracy(method, test_set, test_transform, batch_size, num_workers, device)}
    return FinetuneResult(metrics=metrics, steps=result["step"], out_dir=str(out_dir))


def _targets(dataset: Dataset) -> Tensor:
    """`[N]` or `[N, T]` float64 targets of a regression training set (a `LabelledView` without reading its images)."""
    labels = dataset.labels if isinstance(dataset, LabelledView) else [dataset[i][1] for i in range(len(dataset))]
    return torch.as_tensor(labels, dtype=torch.float64)


class _Outputs(nn.Module):
    """`method.outputs` as a module, so `extract_features` (sharding, eval mode, mode restore) scores it:
    a classifier's logits, a regressor's predictions in the targets' units (`[B, T]`)."""

    def __init__(self, method: LinearHead):
        super().__init__()
        self.method = method

    def forward(self, image: Tensor) -> Tensor:
        return self.method.outputs(image)


def _outputs(method: LinearHead, dataset: Dataset, transform: Callable[[Any], dict], batch_size: int,
             num_workers: int, device: str | torch.device) -> tuple[Tensor, Tensor]:
    """`(outputs [N, K], labels)` of `method` over every sample of `dataset` (eval mode, no augmentation)."""
    return extract_features(_Outputs(method.to(device)), dataset, transform, batch_size, num_workers, device)


def classifier_accuracy(
    method: Classifier,
    dataset: Dataset,
    transform: Callable[[Any], dict],
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> float:
    """Top-1 % of `method.logits` on every sample of `dataset` (eval mode, no augmentation).

    Under torchrun each rank scores its share of `dataset` and every rank returns the same number.
    """
    logits, labels = _outputs(method, dataset, transform, batch_size, num_workers, device)
    return 100.0 * (logits.argmax(dim=1) == labels).double().mean().item()


class LabelledView(Dataset):
    """`dataset` restricted to `indices`, with `labels` in place of its own: item i is
    `(dataset[indices[i]][0], labels[i])`.

    How a labelled subset (few labels) with corrupted labels (label noise) reaches the engine.

    Args:
        dataset: map-style, `dataset[j] -> (sample, label)`.
        indices: [N] positions in `dataset`.
        labels: [N] the labels to train on.
    """

    def __init__(self, dataset: Dataset, indices: Tensor, labels: Tensor):
        if len(indices) != len(labels):
            raise ValueError(f"LabelledView: {len(indices)} indices but {len(labels)} labels")
        self.dataset, self.indices, self.labels = dataset, indices.tolist(), labels.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.dataset[self.indices[i]][0], self.labels[i]
