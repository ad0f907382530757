"""Protocols that train through the engine: fine-tuning and the SGD linear probe on images.

Both put a linear head on a copy of the backbone and call `engine.trainer.fit`, so they get
everything pretraining has (DDP under torchrun, precision, schedules, checkpoints and resume, logs).
The head is a classifier (`Classifier`, top-1) or, for regression tasks, a regressor of standardised
targets (`Regressor`, MSE; RMSE and R² in the targets' units):

- **fine-tune** trains every parameter; options are the MAE/BEiT recipe's [0] layer-wise lr decay
  (for ViTs and any timm model with a `group_matcher`), drop-path and label smoothing;
- **linear_sgd** freezes the backbone (eval mode, so BatchNorm statistics stay put) and trains only
  the head on augmented images (DINO/MAE style [1]), for data whose features do not fit in memory;
- either can train with a noise-robust loss from `robust.py` (GCE, SCE, ELR).

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
import torch.nn.functional as F
from timm.optim import param_groups_layer_decay
from torch import Tensor, nn
from torch.utils.data import Dataset

from ssl_platform import distributed
from ssl_platform.checkpoint.io import load_state_strict
from ssl_platform.data.collate import TransformedDataset
from ssl_platform.engine.optim import param_groups
from ssl_platform.engine.trainer import TrainConfig, fit, seed_everything
from ssl_platform.evaluation.features import extract_features
from ssl_platform.evaluation.regression import regression_metrics
from ssl_platform.evaluation.robust import make_loss
from ssl_platform.methods.base import Method
from ssl_platform.models.backbones import from_spec, pooled_features, spec

OPTIMIZERS = ("adamw", "sgd")
KINDS = ("classification", "regression")


class _LinearHead(Method):
    """A backbone with a linear head: what `Classifier` and `Regressor` share (freezing, layer-wise lr).

    Args:
        backbone: timm contract; trained unless `freeze_backbone`.
        num_outputs: head outputs.
        freeze_backbone: train the head only, with the backbone in eval mode.
        layer_decay: lr scale per layer, decay^(depth from the top) (BEiT/MAE); None for one lr.
    """

    def __init__(self, backbone: nn.Module, num_outputs: int, freeze_backbone: bool = False,
                 layer_decay: float | None = None):
        super().__init__()
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        self.layer_decay = layer_decay
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        # MAE's linear probe [0]: a BatchNorm without affine parameters standardises the frozen
        # features, so one SGD lr suits any backbone's feature scale
        self.norm = nn.BatchNorm1d(backbone.num_features, affine=False) if freeze_backbone else nn.Identity()
        self.head = nn.Linear(backbone.num_features, num_outputs)
        # small init as in DINO's and MAE's probes: the first steps do not disturb the backbone
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def train(self, mode: bool = True) -> _LinearHead:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # frozen means frozen BatchNorm statistics too
        return self

    def param_groups(self) -> list[dict]:
        """The engine's groups; with `layer_decay`, timm's per-layer groups carrying `lr_scale`."""
        if self.layer_decay is None or self.freeze_backbone:
            return param_groups(self)
        groups = []
        skip = self.backbone.no_weight_decay() if hasattr(self.backbone, "no_weight_decay") else ()
        # weight_decay=1.0 only marks decayed groups; the engine multiplies the recipe's decay by wd_scale.
        # timm scales a head-less backbone's top layer by 1.0; our head sits one layer above it, so every
        # backbone scale gets one more factor of decay (BEiT: lr x decay^(L + 1 - layer id)).
        for group in param_groups_layer_decay(self.backbone, weight_decay=1.0, no_weight_decay_list=skip,
                                              layer_decay=self.layer_decay):
            groups.append({"params": group["params"], "lr_scale": group["lr_scale"] * self.layer_decay,
                           "wd_scale": 1.0 if group["weight_decay"] > 0 else 0.0})
        groups += [{"params": [self.head.weight], "lr_scale": 1.0, "wd_scale": 1.0},  # the top: full lr
                   {"params": [self.head.bias], "lr_scale": 1.0, "wd_scale": 0.0}]
        return groups

    def logits(self, image: Tensor) -> Tensor:
        """`image: [B, C, H, W]` -> `[B, num_outputs]`, the head's raw outputs."""
        return self.head(self.norm(pooled_features(self.backbone, image)))

    def outputs(self, image: Tensor) -> Tensor:
        """`image: [B, C, H, W]` -> `[B, num_outputs]`, what the test set is scored on (here the logits)."""
        return self.logits(image)


class Classifier(_LinearHead):
    """A backbone with a linear head, trained on (possibly noisy) labels.

    Batch keys: `image: [B, C, H, W]`, `label: [B]` in [0, num_classes), `index: [B]` (position in
    the training set; ELR keeps one target per sample).

    Args:
        backbone: timm contract; trained unless `freeze_backbone`.
        num_classes: classifier outputs.
        num_samples: training-set size (for ELR's per-sample targets).
        loss: a name of `robust.LOSSES` ("none" is cross-entropy).
        label_smoothing: for loss "none".
        freeze_backbone, layer_decay: see `_LinearHead`.
        loss_kwargs: extra arguments of the loss (e.g. `q` for GCE, `lam` for ELR).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        num_samples: int,
        loss: str = "none",
        label_smoothing: float = 0.0,
        freeze_backbone: bool = False,
        layer_decay: float | None = None,
        loss_kwargs: dict | None = None,
    ):
        super().__init__(backbone, num_classes, freeze_backbone=freeze_backbone, layer_decay=layer_decay)
        self.num_classes = num_classes
        self.criterion = make_loss(
            loss, num_classes=num_classes, num_samples=num_samples, label_smoothing=label_smoothing,
            **(loss_kwargs or {}),
        )

    def forward(self, batch: dict) -> dict[str, Tensor]:
        labels = batch["label"]
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}); got [{int(labels.min())}, {int(labels.max())}]"
            )
        logits = self.logits(batch["image"])
        acc = (logits.detach().argmax(dim=1) == labels).float().mean() * 100
        return {"loss": self.criterion(logits, labels, batch.get("index")), "acc1": acc}


class Regressor(_LinearHead):
    """A backbone with a linear head regressing real targets, trained with MSE on the targets
    standardised by the training set's mean and std, so one lr suits any unit (metres, fractions).

    Batch keys: `image: [B, C, H, W]`, `label: [B]` or `[B, T]` float targets in their own units.

    Args:
        backbone: timm contract; trained unless `freeze_backbone`.
        target_mean, target_std: `[T]` per-output statistics of the training targets (a std of 0, a
            constant target, is taken as 1).
        scalar: targets are `[B]` (one output) rather than `[B, T]`.
        freeze_backbone, layer_decay: see `_LinearHead`.
    """

    def __init__(self, backbone: nn.Module, target_mean: Tensor, target_std: Tensor, scalar: bool = True,
                 freeze_backbone: bool = False, layer_decay: float | None = None):
        target_mean, target_std = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (target_mean, target_std))
        super().__init__(backbone, len(target_mean), freeze_backbone=freeze_backbone, layer_decay=layer_decay)
        self.scalar = scalar
        self.register_buffer("target_mean", target_mean)
        self.register_buffer("target_std", torch.where(target_std > 0, target_std, torch.ones_like(target_std)))

    def outputs(self, image: Tensor) -> Tensor:
        """`image: [B, C, H, W]` -> `[B, T]` predictions in the targets' units."""
        return self.logits(image).float() * self.target_std + self.target_mean

    def predict(self, image: Tensor) -> Tensor:
        """`image: [B, C, H, W]` -> predictions in the targets' units, `[B]` (scalar) or `[B, T]`."""
        pred = self.outputs(image)
        return pred[:, 0] if self.scalar else pred

    def forward(self, batch: dict) -> dict[str, Tensor]:
        target = batch["label"].float().reshape(len(batch["label"]), -1)
        if not torch.isfinite(target).all():
            raise ValueError("regression targets must be finite; the batch has NaN or inf targets: drop or fill "
                             "those samples in the dataset")
        z = self.logits(batch["image"]).float()
        loss = F.mse_loss(z, (target - self.target_mean) / self.target_std)
        rmse = ((z.detach() * self.target_std + self.target_mean - target) ** 2).mean().sqrt()
        return {"loss": loss, "rmse": rmse}


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

    def __init__(self, method: _LinearHead):
        super().__init__()
        self.method = method

    def forward(self, image: Tensor) -> Tensor:
        return self.method.outputs(image)


def _outputs(method: _LinearHead, dataset: Dataset, transform: Callable[[Any], dict], batch_size: int,
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
