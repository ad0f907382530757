"""I-JEPA: predict the representations of masked image blocks from one context block.

Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas. "Self-Supervised Learning from
Images with a Joint-Embedding Predictive Architecture", CVPR 2023 (facebookresearch/ijepa).

Per image, four target blocks and one large context block with the targets cut out are drawn
(`masking/block.py`). A ViT context encoder sees only the context patches; an EMA copy of it, the
target encoder, sees the whole image, and its layer-normalised outputs at each target block are
what a narrow ViT predictor must produce from the context tokens plus mask tokens at the target
positions. No augmentation, no pixels reconstructed, no negatives. Evaluation reads the target
encoder, average-pooled (`self.backbone` *is* the target encoder, so the export is that one).

Deviations from the official code (facebookresearch/ijepa@52c1ae9; docs/methods.md, I-JEPA section):
- Masks. `official_collator: true` reproduces the official collator's sampling semantics (block
  sizes from one coupled draw, cut below the grid side; positions never on the last row or column,
  so at the paper's context scale the context block is always the top-left (H-1)x(W-1); `> min_keep`
  for targets and context, with the official relaxation; truncation to the lowest indices), not its
  random stream; the ImageNet recipe uses it. The default (`false`, kept for the CPU recipes and the
  published Fashion-MNIST run) follows the paper's text instead: independent scale and log-uniform
  aspect draws, blocks up to the whole grid (on 14x14 about half the batches get a whole-grid
  context block, so contexts are larger on average), uniform positions, `min_keep` for the context
  only (`>=`) and an error instead of the relaxation, random truncation (`masking/block.py`).
  Either way the masks are drawn in the method from the checkpointed training RNG, not in a loader
  worker, and where the official collator would loop forever (e.g. on a 7x7 grid) the official mode
  raises.
- Init: timm's ViT init; the official code also divides each block's attn.proj and mlp.fc2 weights
  by sqrt(2 * layer).
- Warm-up from lr 0, not from the official `start_lr` 2e-4 (the engine has no warm-up start value).
- The predictor's mask token is exempt from weight decay (officially decayed: a 3-D parameter).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from ssl_platform.engine.ema import ema_update, frozen_copy, linear_momentum
from ssl_platform.masking.block import check_official_collator, gather_tokens, multiblock_masks
from ssl_platform.methods.base import Method
from ssl_platform.models.backbones import create_backbone
from ssl_platform.models.pos_embed import sincos_2d
from ssl_platform.models.predictor import MaskedTokenPredictor


class IJEPA(Method):
    """I-JEPA with a timm ViT encoder (no class token, fixed sin-cos positions, average pooling).

    Batch keys: `image`: `[B, C, H, W]`, normalised, of the `image_size` given here (the paper's
    only augmentation is a random resized crop with scale 0.3-1: `SupervisedTransform`).

    Args:
        backbone: a timm ViT name (`vit_tiny_patch16_224`, `vit_huge_patch14_224`, ...).
        in_chans: input channels.
        image_size: side of the training images in pixels (a multiple of the patch size).
        backbone_kwargs: more timm kwargs (`patch_size`, `embed_dim`, `depth`, `num_heads`, ...).
        predictor_dim, predictor_depth, predictor_heads: the predictor (heads default: the encoder's).
        num_targets, target_scale, target_aspect, context_scale, context_aspect, min_keep: the masks
            (`masking.block.multiblock_masks`); defaults are the paper's.
        official_collator: draw the masks as the official collator does (module docstring); False:
            the paper's description with our choices where it is silent.
        momentum: EMA momentum of the target encoder, linear from the first to the second value over
            training (the paper: 0.996 -> 1.0).
        loss: "smooth_l1" (the official code) or "l2" (the paper's squared distance, averaged).
    """

    def __init__(
        self,
        backbone: str = "vit_base_patch16_224",
        in_chans: int = 3,
        image_size: int = 224,
        backbone_kwargs: dict | None = None,
        predictor_dim: int = 384,
        predictor_depth: int = 6,
        predictor_heads: int | None = None,
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        context_aspect: tuple[float, float] = (1.0, 1.0),
        min_keep: int = 10,
        official_collator: bool = False,
        momentum: tuple[float, float] = (0.996, 1.0),
        loss: str = "smooth_l1",
    ):
        super().__init__()
        kwargs = {"img_size": image_size, "class_token": False, "global_pool": "avg", "fc_norm": False,
                  **(backbone_kwargs or {})}
        not_a_vit = (f"I-JEPA needs a timm VisionTransformer with position embeddings and no class or register "
                     f"tokens; {backbone!r} with {backbone_kwargs} is not one (use a vit_* name; class_token=False "
                     "is set here)")
        try:
            encoder = create_backbone(backbone, in_chans=in_chans, **kwargs)
        except TypeError as err:  # a non-ViT timm model refuses img_size / class_token
            raise ValueError(not_a_vit) from err
        if not isinstance(encoder, VisionTransformer) or encoder.num_prefix_tokens or encoder.pos_embed is None:
            raise ValueError(not_a_vit)
        if loss not in ("smooth_l1", "l2"):
            raise ValueError(f"loss must be 'smooth_l1' or 'l2', got {loss!r}")
        self.grid = tuple(encoder.patch_embed.grid_size)
        # fixed 2-D sin-cos positions, added before the context is gathered; frozen, so the EMA copy
        # keeps them identical and the export carries them for timm
        with torch.no_grad():
            encoder.pos_embed.copy_(sincos_2d(self.grid, encoder.embed_dim)[None])
        encoder.pos_embed.requires_grad_(False)
        self.context_encoder = encoder
        self.backbone = frozen_copy(encoder)  # the EMA target encoder: evaluated and exported
        heads = predictor_heads or encoder.blocks[0].attn.num_heads
        self.predictor = MaskedTokenPredictor(sincos_2d(self.grid, predictor_dim), encoder.embed_dim, predictor_depth, heads)
        self.mask_kwargs = {"num_targets": num_targets, "target_scale": tuple(target_scale),
                            "target_aspect": tuple(target_aspect), "context_scale": tuple(context_scale),
                            "context_aspect": tuple(context_aspect), "min_keep": min_keep,
                            "official_collator": official_collator}
        # impossible settings fail here, not at step 1 (official sizes: every size a draw can give)
        multiblock_masks(1, self.grid, **self.mask_kwargs)
        if official_collator:
            check_official_collator(self.grid, *(self.mask_kwargs[k] for k in (
                "target_scale", "target_aspect", "context_scale", "context_aspect", "min_keep")))
        self.momentum = tuple(momentum)
        linear_momentum(0.0, *self.momentum)
        self.loss_kind = loss

    def no_weight_decay(self) -> set[str]:
        """The predictor's mask token is an embedding, not a weight."""
        return {"predictor.mask_token"}

    def encode(self, encoder: VisionTransformer, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """`x: [B, C, H, W]` -> tokens `[B, N, D]`, or `[B, K, D]` for the patches `keep: [B, K]` only.

        Positions are added before the gather, so a kept token knows where it came from; the dropped
        patches are not in the sequence at all (no mask tokens in the encoder).
        """
        if x.shape[-2:] != encoder.patch_embed.img_size:
            raise ValueError(
                f"I-JEPA was built for {tuple(encoder.patch_embed.img_size)} images, got {tuple(x.shape[-2:])}; "
                "set method.image_size to the data's size (data.transform.size)"
            )
        tokens = encoder._pos_embed(encoder.patch_embed(x))  # [B, N, D]
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        return encoder.norm(encoder.blocks(encoder.norm_pre(tokens)))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["image"]
        context_idx, target_idx = multiblock_masks(x.shape[0], self.grid, **self.mask_kwargs)
        context_idx, target_idx = context_idx.to(x.device), target_idx.to(x.device)
        with torch.no_grad():
            # the whole image through the target encoder, then LayerNorm without affine (the paper)
            h = self.encode(self.backbone, x)
            # the spread of the evaluated (average-pooled) representation across images: near 0
            # means the target encoder collapsed to a constant
            spread = h.mean(1).std(0).mean()
            h = F.layer_norm(h, h.shape[-1:])
            m = target_idx.shape[0]
            targets = gather_tokens(h.repeat(m, 1, 1), target_idx.flatten(0, 1))  # [M*B, Nt, D]
        context = self.encode(self.context_encoder, x, context_idx)
        pred = self.predictor(context, context_idx, target_idx)
        if self.loss_kind == "smooth_l1":
            loss = F.smooth_l1_loss(pred, targets)
        else:
            loss = F.mse_loss(pred, targets)
        sizes = torch.tensor([context_idx.shape[1], target_idx.shape[2]], dtype=torch.float32, device=x.device)
        return {"loss": loss, "context_patches": sizes[0], "target_patches": sizes[1], "target_spread": spread}

    def on_step_end(self, progress: float) -> None:
        """The EMA update, after the optimizer step: the target follows the context encoder."""
        ema_update(self.backbone, self.context_encoder, linear_momentum(progress, *self.momentum))
