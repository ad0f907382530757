"""A plain convolutional encoder registered with timm: `timm.create_model("plain_convnet", ...)`.

Blocks of conv3x3 + BatchNorm + ReLU + 2x2 max-pool, the encoder of G-SimCLR's denoising autoencoder
(32/64/128 channels on CIFAR, a 4x4x128 latent). It keeps timm's backbone contract
(`num_features`, `forward_features`, `forward_head(x, pre_logits=True)`, `reset_classifier`), so
it trains through any method, exports to `backbone.safetensors` and loads in the eval harness like
a ResNet. Importing `ssl_platform.models.backbones` registers it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn


class PlainConvNet(nn.Module):
    """conv3x3-BN-ReLU-maxpool blocks, global average pooling, optional linear classifier.

    Args:
        channels: output channels of each block; the spatial size halves after each.
        in_chans: input channels.
        num_classes: classifier outputs (0: none, `forward` returns pooled features).
        drop_rate: dropout before the classifier.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128), in_chans: int = 3, num_classes: int = 1000,
                 drop_rate: float = 0.0):
        super().__init__()
        blocks, prev = [], in_chans
        for width in channels:
            blocks.append(nn.Sequential(
                nn.Conv2d(prev, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ))
            prev = width
        self.stages = nn.Sequential(*blocks)
        self.num_features = prev
        self.drop_rate = drop_rate
        self.reset_classifier(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        if global_pool != "avg":
            raise ValueError(f"PlainConvNet pools by averaging only, got global_pool={global_pool!r}")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`x: [B, C, H, W]` -> `[B, channels[-1], H / 2^L, W / 2^L]` (floor at each block)."""
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """`[B, D, h, w]` -> pooled `[B, D]` (pre_logits) or logits `[B, num_classes]`."""
        x = x.mean(dim=(2, 3))
        if pre_logits:
            return x
        return self.fc(nn.functional.dropout(x, self.drop_rate, self.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs({
    # no hosted weights: our own trained files load with pretrained_cfg_overlay=dict(file=...)
    "plain_convnet.untrained": {"num_classes": 0, "input_size": (3, 32, 32), "pool_size": None,
                                "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "classifier": "fc",
                                "first_conv": "stages.0.0", "license": "apache-2.0"},
})


@register_model
def plain_convnet(pretrained: bool = False, **kwargs) -> PlainConvNet:
    """G-SimCLR's CIFAR autoencoder encoder: 32/64/128 channels by default (`channels=` to change)."""
    kwargs.setdefault("channels", (32, 64, 128))
    return build_model_with_cfg(PlainConvNet, "plain_convnet", pretrained, **kwargs)
