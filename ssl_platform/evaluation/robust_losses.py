"""Noise-robust losses for classifiers trained on noisy labels: cross-entropy, GCE [0], SCE [1], ELR [2].

Every loss is an `nn.Module` called as `loss(logits [B, C], targets [B], index [B] | None) -> 0-d mean`,
so the eval harness and the fine-tuning engine never branch on the method; only ELR needs `index`
(each sample's position in the training set, which keys its persistent target). `make_loss` builds
one by its name in `LOSSES` ("none" is cross-entropy). NMTune, a head plus a loss, is in `robust.py`.

- [0]: Zhang & Sabuncu, Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
  Labels, 2018, https://arxiv.org/abs/1805.07836
- [1]: Wang et al., Symmetric Cross Entropy for Robust Learning with Noisy Labels, 2019,
  https://arxiv.org/abs/1908.06112
- [2]: Liu et al., Early-Learning Regularization Prevents Memorization of Noisy Labels, 2020,
  https://arxiv.org/abs/2007.00151
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_platform import distributed

LOSSES: tuple[str, ...] = ("none", "gce", "sce", "elr")


def fp32(x: Tensor) -> Tensor:
    """Upcast half precision (autocast) to float32; float32 and float64 pass through."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def check_batch(logits: Tensor, targets: Tensor, name: str) -> None:
    """Shape checks only: value checks would cost a device sync on every step."""
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"{name}: expected logits [B, C] and targets [B], got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )


class CrossEntropy(nn.Module):
    """Plain (optionally label-smoothed) cross-entropy with the robust losses' call signature."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"cross-entropy: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, targets: Tensor, index: Tensor | None = None) -> Tensor:
        """logits: [B, C], targets: [B] int64; index is ignored. Returns the batch mean."""
        check_batch(logits, targets, "cross-entropy")
        return F.cross_entropy(fp32(logits), targets, label_smoothing=self.label_smoothing)


class GCELoss(nn.Module):
    """Generalized cross-entropy [0]: mean_i (1 - p_{i,y_i}^q) / q.

    q interpolates between CE (q -> 0) and MAE (q = 1); the paper's default is q = 0.7.
    """

    def __init__(self, q: float = 0.7):
        super().__init__()
        if not 0.0 < q <= 1.0:
            raise ValueError(f"gce: q must be in (0, 1] (q -> 0 is CE, 1 is MAE), got {q}")
        self.q = q

    def forward(self, logits: Tensor, targets: Tensor, index: Tensor | None = None) -> Tensor:
        """logits: [B, C], targets: [B] int64; index is ignored. Returns the batch mean."""
        check_batch(logits, targets, "gce")
        log_py = fp32(logits).log_softmax(dim=1).gather(1, targets[:, None]).squeeze(1)  # [B]
        # p^q as exp(q log p): stays accurate when p_y underflows
        return ((1.0 - torch.exp(self.q * log_py)) / self.q).mean()


class SCELoss(nn.Module):
    """Symmetric cross-entropy [1]: α·CE + β·RCE, RCE = -Σ_k p_k log(max(onehot_k, clamp)).

    With the one-hot clamped at `clamp`, RCE = -log(clamp)·(1 - p_y). The default clamp 1e-4 is the
    official code's (A = log 1e-4 ≈ -9.21); the paper's text uses A = -4 instead, i.e. clamp = e^-4.
    The official code also clamps p to >= 1e-7 inside RCE; that is left out (it moves the loss by
    less than C·1e-6). α = 0.1, β = 1.0 are the paper's CIFAR-10 values (CIFAR-100: 6.0, 0.1).
    """

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, clamp: float = 1e-4):
        super().__init__()
        if alpha < 0 or beta < 0 or not 0.0 < clamp < 1.0:
            raise ValueError(f"sce: need alpha, beta >= 0 and clamp in (0, 1), got {alpha}, {beta}, {clamp}")
        self.alpha, self.beta, self.clamp = alpha, beta, clamp

    def forward(self, logits: Tensor, targets: Tensor, index: Tensor | None = None) -> Tensor:
        """logits: [B, C], targets: [B] int64; index is ignored. Returns the batch mean."""
        check_batch(logits, targets, "sce")
        log_p = fp32(logits).log_softmax(dim=1)  # [B, C]
        ce = F.nll_loss(log_p, targets)
        # Σ_{k≠y} p_k instead of 1 - p_y: no cancellation when p_y is close to 1
        p_other = log_p.exp().scatter(1, targets[:, None], 0.0).sum(dim=1)  # [B]
        rce = -math.log(self.clamp) * p_other.mean()
        return self.alpha * ce + self.beta * rce


class ELRLoss(nn.Module):
    """Early-learning regularisation [2]: CE(logits, y) + λ·mean_i log(1 - <t_i, p_i>).

    p = softmax(logits) clamped to [1e-4, 1 - 1e-4]. In training mode each call first updates the
    visited rows, t_i <- β·t_i + (1 - β)·p̂_i / Σ p̂_i with p̂ = p detached, then computes the loss
    with the new t; in eval mode t is read only. Defaults β = 0.7, λ = 3 are the CIFAR-10 values
    (CIFAR-100: 0.9, 7).

    Buffers:
        target_ema: [num_samples, num_classes] float32, starts at 0 (saved with the state dict).
    """

    def __init__(self, num_samples: int, num_classes: int, beta: float = 0.7, lam: float = 3.0):
        super().__init__()
        if num_samples < 1 or num_classes < 2:
            raise ValueError(f"elr: need num_samples >= 1 and num_classes >= 2, got {num_samples}, {num_classes}")
        if not 0.0 <= beta < 1.0 or lam < 0:
            raise ValueError(f"elr: need beta (the EMA momentum) in [0, 1) and lam >= 0, got {beta}, {lam}")
        self.beta, self.lam = beta, lam
        self.register_buffer("target_ema", torch.zeros(num_samples, num_classes))

    def forward(self, logits: Tensor, targets: Tensor, index: Tensor | None = None) -> Tensor:
        """logits: [B, C], targets: [B] int64, index: [B] int64 rows of `target_ema`. Returns the mean."""
        check_batch(logits, targets, "elr")
        table = self.target_ema
        if index is None:
            raise ValueError("elr: index is required: pass each sample's position in the training set")
        if index.shape != targets.shape or logits.shape[1] != table.shape[1]:
            raise ValueError(f"elr: expected index [B] and {table.shape[1]} classes, got index "
                             f"{tuple(index.shape)} and logits {tuple(logits.shape)}")
        index = index.to(table.device, torch.int64)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= table.shape[0]):
            raise ValueError(f"elr: index must be in [0, num_samples={table.shape[0]})")
        p = fp32(logits).softmax(dim=1).clamp(1e-4, 1.0 - 1e-4)  # [B, C]
        if self.training:
            p_hat = p.detach()
            self._update(index, (p_hat / p_hat.sum(dim=1, keepdim=True)).to(table.dtype))
        reg = torch.log(1.0 - (table[index] * p).sum(dim=1)).mean()
        return F.cross_entropy(fp32(logits), targets) + self.lam * reg

    @torch.no_grad()
    def _update(self, index: Tensor, p_hat: Tensor) -> None:
        # Under DDP each rank visits different samples, and DDP broadcasts rank 0's buffers at every
        # forward by default: a local-only update would be overwritten (or, without the broadcast, the
        # ranks' tables would drift apart). Applying every rank's visits on every rank keeps all the
        # tables identical, each equal to a single process's table on the global batch.
        index, p_hat = _gather_visits(index, p_hat)
        # a sample visited twice in one step (DistributedSampler pads with repeats) is updated once,
        # with its first occurrence; index_put with duplicates would pick a writer arbitrarily
        rows, inverse = torch.unique(index, return_inverse=True)
        first = torch.full_like(rows, index.numel()).scatter_reduce(
            0, inverse, torch.arange(index.numel(), device=index.device), reduce="amin"
        )
        t = self.target_ema
        t[rows] = self.beta * t[rows] + (1.0 - self.beta) * p_hat[first]


def _gather_visits(index: Tensor, p_hat: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's (index [B_r], p_hat [B_r, C]) concatenated in rank order; identity at world size 1."""
    if distributed.world_size() == 1:
        return index, p_hat
    # all_gather needs equal shapes but the last batches may differ (drop_last=False): pad every rank
    # to the largest batch with index -1 and drop those rows after the gather
    sizes = distributed.all_gather(index.new_tensor([index.numel()]))  # [world]
    pad = int(sizes.max()) - index.numel()
    index = distributed.all_gather(F.pad(index, (0, pad), value=-1))  # [world * B_max]
    p_hat = distributed.all_gather(F.pad(p_hat, (0, 0, 0, pad)))  # [world * B_max, C]
    keep = index >= 0
    return index[keep], p_hat[keep]


def make_loss(
    name: str, *, num_classes: int, num_samples: int, label_smoothing: float = 0.0, **kwargs
) -> nn.Module:
    """Build the loss called `name` (one of LOSSES); `kwargs` go to its constructor.

    Args:
        name: "none" (cross-entropy), "gce", "sce" or "elr".
        num_classes: C. num_samples: N, the training-set size (ELR's table has one row per sample).
        label_smoothing: only with "none"; the robust losses define their own targets.
        **kwargs: e.g. q for GCE, alpha/beta/clamp for SCE, beta/lam for ELR.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)} ('nmtune' is a head, "
                         "see train_head)")
    if label_smoothing and name != "none":
        raise ValueError(f"label_smoothing={label_smoothing} is only valid with loss 'none', not {name!r}")
    if name == "elr":
        return ELRLoss(num_samples, num_classes, **kwargs)
    if name == "none":
        kwargs["label_smoothing"] = label_smoothing
    return {"none": CrossEntropy, "gce": GCELoss, "sce": SCELoss}[name](**kwargs)
