"""Pixel reconstruction losses of the masked-modelling methods (SparK, and the MAE family).

Pure functions on tensors; `tests/losses/test_reconstruction.py` checks them against naive loops.
"""

from __future__ import annotations

from torch import Tensor


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """`[B, C, H, W]` -> `[B, (H/p)(W/p), p*p*C]`: patches in row-major order, each flattened as (p, p, C).

    Raises ValueError if H or W is not a multiple of `patch_size`.
    """
    b, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"a {h}x{w} image does not split into {patch_size}x{patch_size} patches")
    gh, gw = h // patch_size, w // patch_size
    x = images.reshape(b, c, gh, patch_size, gw, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, patch_size * patch_size * c)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int], channels: int) -> Tensor:
    """Inverse of `patchify`: `[B, gh*gw, p*p*C]` -> `[B, C, gh*p, gw*p]`."""
    b = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(b, gh, gw, patch_size, patch_size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, gh * patch_size, gw * patch_size)


def normalize_patches(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Each patch to zero mean and unit (unbiased) variance over its pixels: MAE's and SparK's target."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_patch_mse(pred: Tensor, target: Tensor, masked: Tensor, *, norm_pix: bool = True) -> Tensor:
    """Mean squared error per patch, averaged over the masked patches only.

    Args:
        pred: `[B, L, D]` reconstructed patches.
        target: `[B, L, D]` input patches (normalised per patch here when `norm_pix`).
        masked: `[B, L]` bool, True where the patch was hidden from the encoder; visible patches
            contribute nothing (reconstructing what the encoder saw teaches nothing).
        norm_pix: per-patch target normalisation (`normalize_patches`).

    Returns:
        0-d tensor: sum_i l_i m_i / sum_i m_i with l_i the mean squared error of patch i.
    """
    if pred.shape != target.shape or masked.shape != pred.shape[:2]:
        raise ValueError(
            f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and masked {tuple(masked.shape)} must be "
            "[B, L, D], [B, L, D] and [B, L]"
        )
    if norm_pix:
        target = normalize_patches(target)
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)  # [B, L]
    weight = masked.to(per_patch.dtype)
    count = weight.sum()
    if count == 0:
        raise ValueError("no patch is masked, so the masked-patch loss is undefined; use a mask_ratio > 0")
    return (per_patch * weight).sum() / count
