"""Supervised baseline: cross-entropy on labels, same backbones and engine as the SSL methods.

Every evaluation compares a pretrained backbone against this one (and against random init).
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_platform.methods.base import Method, build_backbone
from ssl_platform.models.backbones import pooled_features


class Supervised(Method):
    """Linear classifier on the backbone, trained end to end with cross-entropy.

    Batch keys: `image: [B, C, H, W]`, `label: [B]` (int64 in [0, num_classes)).

    Args:
        backbone: timm model name or a module with timm's contract.
        num_classes: number of classes.
        small_input, in_chans, backbone_kwargs: as for `SimCLR`.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        num_classes: int = 10,
        small_input: bool = False,
        in_chans: int = 3,
        backbone_kwargs: dict | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, small_input, in_chans, backbone_kwargs)
        self.classifier = nn.Linear(self.backbone.num_features, num_classes)
        self.num_classes = num_classes
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["label"]
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}); got [{int(labels.min())}, {int(labels.max())}]. "
                "Unlabelled data (label -1) cannot train the supervised baseline; set method.num_classes to match."
            )
        logits = self.classifier(pooled_features(self.backbone, batch["image"]))
        acc = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {"loss": self.criterion(logits, labels), "acc1": acc}
