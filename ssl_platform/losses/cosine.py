"""GraphMAE's scaled cosine error (Hou et al., KDD 2022, THUDM/GraphMAE).

    SCE = 1/|V~| * sum_{v in V~} (1 - cos(x_v, z_v)) ** gamma

over the masked nodes V~ only: `x` are the original features, `z` the reconstruction. gamma >= 1
down-weights nodes that are already reconstructed well (the paper's "scaling"), as the focal loss
does for easy examples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scaled_cosine_error(reconstruction: torch.Tensor, target: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """`reconstruction, target: [M, F]` (the masked nodes' rows) -> the mean of `(1 - cos) ** gamma` (0-d).

    Rows are L2-normalised first (a zero row stays zero, giving cos = 0 and an error of 1).
    """
    if gamma < 1:
        raise ValueError(f"gamma (the scaling exponent) must be >= 1, got {gamma}")
    if reconstruction.shape != target.shape or reconstruction.ndim != 2:
        raise ValueError(f"reconstruction and target must both be [M, F]; got {tuple(reconstruction.shape)} and "
                         f"{tuple(target.shape)}")
    if reconstruction.shape[0] == 0:
        raise ValueError("no masked nodes: the loss is over the masked nodes only (raise mask_rate or use a larger graph)")
    cos = (F.normalize(reconstruction, dim=-1) * F.normalize(target, dim=-1)).sum(-1)
    return (1 - cos).pow(gamma).mean()
