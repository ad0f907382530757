"""Denoising autoencoder: G-SimCLR's first stage, whose pooled latent gives the pseudo-labels.

Vincent et al., "Extracting and Composing Robust Features with Denoising Autoencoders", ICML 2008;
used by Chakraborty et al., "G-SimCLR", ICDM workshops 2020 (see `methods/gsimclr.py`).

Gaussian noise is added to the input, the encoder (any timm CNN; `plain_convnet` is the paper's
CIFAR encoder) maps it to a feature map, and a mirrored upsampling decoder reconstructs the clean
input under an MSE loss. The embedding is the global-average-pooled latent, as in the paper.

Deviations from the official notebook (ariG23498/G-SimCLR@bd77e7f, CIFAR10/Autoencoder.ipynb): inputs
are normalised (mean/std), not [0, 1] pixels, so the output is linear (no sigmoid) and `noise_std`
is in normalised units (0.1 here for the official 0.01 on [0, 1]); the decoder mirrors any encoder's
stride with nearest upsampling + conv-BN-ReLU blocks whose width halves at each (64/32/16 after the
CIFAR encoder's 128-channel latent; officially 128/64/32); training runs a fixed number of epochs
(officially early stopping on the test loss, patience 2, best weights restored).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ssl_platform.methods.base import Method, build_backbone


class DenoisingAutoencoder(Method):
    """Conv encoder + upsampling decoder, MSE between the reconstruction of a noisy input and the clean one.

    Batch keys: `image`: `[B, C, H, W]`, clean and normalised (e.g. `EvalTransform`); the noise is
    drawn here from the training RNG, so a resumed run draws the same noise.

    Args:
        backbone: timm model name or module with timm's contract; its `forward_features` must give a
            `[B, D, h, w]` map (a CNN).
        small_input, in_chans, backbone_kwargs: as for every method (`build_backbone`).
        image_size: training image side; fixes how many 2x upsampling blocks mirror the encoder's stride.
        noise_std: std of the Gaussian noise in normalised units. The paper adds 0.01 to [0, 1] pixels,
            which barely changes an 8-bit image; 0.1 here (0.05 in pixel units with mean/std 0.5) makes
            the denoising task real without hiding the content.
        decoder_min_channels: narrowest decoder block.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "plain_convnet",
        small_input: bool = False,
        in_chans: int = 3,
        backbone_kwargs: dict | None = None,
        image_size: int = 32,
        noise_std: float = 0.1,
        decoder_min_channels: int = 16,
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, small_input, in_chans, backbone_kwargs)
        self.noise_std = noise_std
        with torch.no_grad():
            was = self.backbone.training
            latent = self.backbone.eval().forward_features(torch.zeros(1, in_chans, image_size, image_size))
            self.backbone.train(was)
        if latent.ndim != 4:
            raise ValueError(
                f"DenoisingAutoencoder needs a CNN backbone whose forward_features gives [B, D, h, w]; "
                f"got shape {tuple(latent.shape)}"
            )
        ups = max(0, round(math.log2(image_size / latent.shape[-1])))
        blocks, width = [], latent.shape[1]
        for _ in range(ups):
            out = max(decoder_min_channels, width // 2)
            blocks.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
            ))
            width = out
        self.decoder = nn.Sequential(*blocks)
        # linear output: inputs are normalised (not [0, 1]), so the paper's sigmoid would clip them
        self.to_pixels = nn.Conv2d(width, in_chans, 3, padding=1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """`x: [B, C, H, W]` -> reconstruction `[B, C, H, W]` (sizes that do not halve evenly are
        restored by a final interpolation)."""
        y = self.decoder(self.backbone.forward_features(x))
        if y.shape[-2:] != x.shape[-2:]:
            y = nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.to_pixels(y)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["image"]
        noisy = x + self.noise_std * torch.randn_like(x)
        return {"loss": nn.functional.mse_loss(self.reconstruct(noisy), x)}
