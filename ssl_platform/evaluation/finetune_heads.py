"""What fine-tuning and the SGD linear probe train: a backbone with a linear head, as a `Method` the
engine fits (`finetune.py` runs them).

`Classifier` scores top-1 and trains with cross-entropy or a noise-robust loss (`robust_losses.py`);
`Regressor` trains with MSE on standardised targets and predicts in the targets' units. Both share
`LinearHead`: freezing (the linear probe, with MAE's affine-free BatchNorm [0]) and the layer-wise lr
decay of the MAE/BEiT fine-tuning recipe [0].

- [0]: He et al., Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.optim import param_groups_layer_decay
from torch import Tensor, nn

from ssl_platform.engine.optim import param_groups
from ssl_platform.evaluation.robust_losses import make_loss
from ssl_platform.methods.base import Method
from ssl_platform.models.backbones import pooled_features


class LinearHead(Method):
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

    def train(self, mode: bool = True) -> LinearHead:
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


class Classifier(LinearHead):
    """A backbone with a linear head, trained on (possibly noisy) labels.

    Batch keys: `image: [B, C, H, W]`, `label: [B]` in [0, num_classes), `index: [B]` (position in
    the training set; ELR keeps one target per sample).

    Args:
        backbone: timm contract; trained unless `freeze_backbone`.
        num_classes: classifier outputs.
        num_samples: training-set size (for ELR's per-sample targets).
        loss: a name of `robust_losses.LOSSES` ("none" is cross-entropy).
        label_smoothing: for loss "none".
        freeze_backbone, layer_decay: see `LinearHead`.
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


class Regressor(LinearHead):
    """A backbone with a linear head regressing real targets, trained with MSE on the targets
    standardised by the training set's mean and std, so one lr suits any unit (metres, fractions).

    Batch keys: `image: [B, C, H, W]`, `label: [B]` or `[B, T]` float targets in their own units.

    Args:
        backbone: timm contract; trained unless `freeze_backbone`.
        target_mean, target_std: `[T]` per-output statistics of the training targets (a std of 0, a
            constant target, is taken as 1).
        scalar: targets are `[B]` (one output) rather than `[B, T]`.
        freeze_backbone, layer_decay: see `LinearHead`.
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
