"""A plain convolutional encoder registered with timm: `timm.create_model("plain_convnet", ...)`.

Blocks of conv3x3 + BatchNorm + ReLU + 2x2 max-pool, the encoder of G-SimCLR's denoising autoencoder
(32/64/128 channels on CIFAR, a 4x4x128 latent). It keeps timm's model contract, checked for every
model we register by `tests/models/test_timm_contract.py`: a default cfg (`input_size`, `mean`, `std`,
`pool_size`, `first_conv`, `classifier`), `num_classes` / `num_features` / `head_hidden_size`,
`forward_features`, `forward_head(x, pre_logits=True)`, `reset_classifier(n, global_pool)`,
`feature_info` (one entry per block) with `features_only=True`, `forward_intermediates`,
`prune_intermediate_layers`, gradient checkpointing, TorchScript and torch.fx tracing. So it trains
through any method, exports to `backbone.safetensors` and loads in the eval harness like a ResNet.
Importing `ssl_platform.models.backbones` registers it.
"""

# no `from __future__ import annotations`: torch.fx copies forward()'s annotations into the code of a
# traced model, and TorchScript cannot read them as the strings that import leaves (fx, then script)
from collections.abc import Sequence

import torch
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

POOLS = ("avg", "")  # average over H x W, or none ('' : forward_head returns the feature map)


class PlainConvNet(nn.Module):
    """conv3x3-BN-ReLU-maxpool blocks, global average pooling, optional linear classifier.

    Args:
        channels: output channels of each block; the spatial size halves after each.
        in_chans: input channels.
        num_classes: classifier outputs (0: none, `forward` returns pooled features).
        drop_rate: dropout before the classifier.
        global_pool: "avg", or "" for no pooling (then `forward` returns the `[B, D, h, w]` map and
            there can be no classifier).
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128), in_chans: int = 3, num_classes: int = 1000,
                 drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        blocks, prev = [], in_chans
        for width in channels:
            blocks.append(nn.Sequential(
                nn.Conv2d(prev, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ))
            prev = width
        self.stages = nn.Sequential(*blocks)
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = prev
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        # block i ends at stride 2^(i+1); `features_only=True` and `forward_intermediates` follow this list
        self.feature_info = [{"num_chs": int(w), "reduction": 2 ** (i + 1), "module": f"stages.{i}"}
                             for i, w in enumerate(channels)]
        self.reset_classifier(num_classes, global_pool)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier of `num_classes` outputs (0: none); `global_pool` None keeps the pooling."""
        global_pool = getattr(self, "global_pool", "avg") if global_pool is None else global_pool
        if global_pool not in POOLS:
            raise ValueError(f"PlainConvNet pools by averaging ('avg') or not at all (''), got global_pool={global_pool!r}")
        if num_classes and not global_pool:
            raise ValueError(f"global_pool='' keeps the [B, D, h, w] map, which a linear classifier cannot take; "
                             f"pass num_classes=0 with it (got num_classes={num_classes})")
        self.num_classes, self.global_pool = num_classes, global_pool
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`x: [B, C, H, W]` -> `[B, channels[-1], H / 2^L, W / 2^L]` (floor at each block)."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """`[B, D, h, w]` -> pooled `[B, D]` (pre_logits) or logits `[B, num_classes]`; no pooling: the map."""
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        if pre_logits:
            return x
        return self.fc(nn.functional.dropout(x, self.drop_rate, self.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The output of chosen blocks, `[B, channels[i], H / 2^(i+1), W / 2^(i+1)]` each.

        Args:
            x: images `[B, C, H, W]`.
            indices: blocks to return: None all, an int the last n, a list those (negatives count back).
            norm: accepted for timm's interface; this network has no final norm, so nothing changes.
            stop_early: stop after the last block asked for (the returned final features are then that block's).
            output_fmt: "NCHW" only.
            intermediates_only: return only the list.

        Returns:
            `(forward_features(x), intermediates)`, or the list alone with `intermediates_only`.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"PlainConvNet's intermediates are feature maps: output_fmt must be 'NCHW', got {output_fmt!r}")
        take, last = feature_take_indices(len(self.stages), indices)
        stages = self.stages[:last + 1] if stop_early else self.stages
        intermediates = []
        for i, stage in enumerate(stages):
            x = checkpoint(stage, x, use_reentrant=False) if self.grad_checkpointing else stage(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last of `indices` (and the classifier); returns the kept indices.

        With fewer blocks the features end earlier, so `num_features` becomes that block's width.
        `prune_norm` is accepted for timm's interface (there is no final norm).
        """
        take, last = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:last + 1]
        self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
        if prune_head or last < len(self.feature_info) - 1:
            self.reset_classifier(0, "")
        return take


default_cfgs = generate_default_cfgs({
    # no hosted weights: our own trained files load with pretrained_cfg_overlay=dict(file=...)
    "plain_convnet.untrained": {"num_classes": 0, "input_size": (3, 32, 32), "pool_size": (4, 4), "crop_pct": 1.0,
                                "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                                "classifier": "fc", "first_conv": "stages.0.0", "license": "apache-2.0"},
})


@register_model
def plain_convnet(pretrained: bool = False, **kwargs) -> PlainConvNet:
    """G-SimCLR's CIFAR autoencoder encoder: 32/64/128 channels by default (`channels=` to change)."""
    kwargs.setdefault("channels", (32, 64, 128))
    # features_only: every block by default; the blocks sit one Sequential deep, so flatten it
    feature_cfg = {"flatten_sequential": True, "out_indices": tuple(range(len(kwargs["channels"])))}
    return build_model_with_cfg(PlainConvNet, "plain_convnet", pretrained, feature_cfg=feature_cfg, **kwargs)
