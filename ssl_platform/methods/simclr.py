"""SimCLR: contrastive learning of visual representations.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (v1) and "Big Self-Supervised Models are Strong Semi-Supervised
Learners", NeurIPS 2020 (v2, the 3-layer head).

Two augmentations of each image go through the backbone f and a projection MLP g; NT-Xent asks each
view to pick its partner among the other 2N-1 views. With several processes, negatives come from the
global batch: lightly's NT-Xent gathers the projections with a gradient-carrying all_gather and
offsets the labels by rank. Evaluations use h = f(x), never z = g(h).

Deviations from the official code the recipes cite (google-research/simclr tf2, solo-learn; the
optimizer, augmentations and schedules are the recipes', docs/recipe_sources.md):
- both views go through the backbone in one batch, so BatchNorm sees 2B images (as in the TF code;
  solo-learn runs each view separately, B images per BatchNorm);
- the small-input stem is timm's ResNet with a 3x3 stride-1 conv, padding 1, no max-pool
  (solo-learn's torchvision conv1 has padding 2: a 34x34 map on 32 px);
- the head is lightly's: with `proj_batch_norm` BatchNorm after the hidden layer and on the output
  (the paper's v1 head), without it Linear-ReLU-Linear (solo-learn's).
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from ssl_platform.methods.base import Method, build_backbone
from ssl_platform.models.backbones import pooled_features


class SimCLR(Method):
    """SimCLR with lightly's projection head and NT-Xent loss.

    Batch keys: `views`: a list of two tensors `[B, C, H, W]`, independently augmented views of the
    same B images (`ssl_platform.data.transforms.SimCLRViews`).

    Args:
        backbone: timm model name or a module with timm's contract.
        small_input: 3x3 stride-1 stem without max-pool, for 28-32 px images.
        in_chans: input channels.
        backbone_kwargs: extra timm kwargs (e.g. `channels: [32, 64, 128, 256]`).
        proj_hidden_dim: hidden width of the projection MLP (paper: 2048 for ResNet-50).
        proj_dim: output width (paper: 128).
        proj_layers: 2 (v1) or 3 (v2).
        proj_batch_norm: BatchNorm in the head (paper: yes). Without it, the result of one process
            does not depend on how the batch is split across processes.
        temperature: NT-Xent temperature tau (paper: 0.1 at batch 4096, 0.5 for CIFAR-size batches).
    """

    def __init__(
        self,
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
        super().__init__()
        self.in_chans = in_chans
        self.backbone = build_backbone(backbone, small_input, in_chans, backbone_kwargs)
        self.projection = SimCLRProjectionHead(
            self.backbone.num_features, proj_hidden_dim, proj_dim, num_layers=proj_layers, batch_norm=proj_batch_norm
        )
        # gather_distributed is a no-op at world size 1, so one flag serves every launch
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x0, x1 = batch["views"]
        # both views in one pass: BatchNorm sees all 2B images, as in the paper's global BN per device
        z = self.projection(pooled_features(self.backbone, torch.cat([x0, x1])))  # [2B, proj_dim]
        z0, z1 = z.chunk(2)
        loss = self.criterion(z0, z1)
        with torch.no_grad():
            # fraction of views whose partner is the most similar other view: a cheap health signal
            zn = nn.functional.normalize(z.detach().float(), dim=1)
            sim = zn @ zn.T
            sim.fill_diagonal_(-2.0)
            partner = torch.arange(z.shape[0], device=z.device).roll(z.shape[0] // 2)
            top1 = (sim.argmax(dim=1) == partner).float().mean()
        return {"loss": loss, "pair_top1": top1}
