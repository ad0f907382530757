"""Learning with noisy labels on cached features: the NMTune head [3] and `train_head`, which trains a
head with any of the robust methods.

Methods (ROBUST): "none" (cross-entropy), "gce" [0], "sce" [1], "elr" [2] (the losses of
`robust_losses.py`, on a linear head), and "nmtune" [3], a residual MLP head with feature-space
regularisers: a head plus a loss, so `train_head` offers it, `robust_losses.make_loss` not.

- [0]: Zhang & Sabuncu, Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
  Labels, 2018, https://arxiv.org/abs/1805.07836
- [1]: Wang et al., Symmetric Cross Entropy for Robust Learning with Noisy Labels, 2019,
  https://arxiv.org/abs/1908.06112
- [2]: Liu et al., Early-Learning Regularization Prevents Memorization of Noisy Labels, 2020,
  https://arxiv.org/abs/2007.00151
- [3]: Chen et al., Understanding and Mitigating the Label Noise in Pre-training on Downstream Tasks,
  2024, https://arxiv.org/abs/2309.17002
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_platform.evaluation.lbfgs import standardise
from ssl_platform.evaluation.robust_losses import check_batch, fp32, make_loss

ROBUST: tuple[str, ...] = ("none", "gce", "sce", "elr", "nmtune")


class NMTuneHead(nn.Module):
    """NMTune's head [3]: h = z + s ⊙ MLP(z) on frozen features, then a linear classifier on h.

    MLP = Linear(D, mD) -> BatchNorm1d -> ReLU -> Linear(mD, D) with m = hidden_mult; s is a learnable
    per-dimension scale (the README's `--mlp-with-res --mlp-res-scale-init=1.0`). The classifier's
    weight is Kaiming-uniform (gain √2, bound √(6/D)) and its bias 0, as the official code.
    """

    def __init__(self, dim: int, num_classes: int, hidden_mult: int = 4, res_scale_init: float = 1.0):
        super().__init__()
        hidden = hidden_mult * dim
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )
        self.res_scale = nn.Parameter(torch.full((dim,), float(res_scale_init)))
        self.classifier = nn.Linear(dim, num_classes)
        nn.init.kaiming_uniform_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z: [B, D] -> (h [B, D], logits [B, C])."""
        h = z + self.res_scale * self.mlp(z)
        return h, self.classifier(h)


def nmtune_loss(
    z: Tensor,
    h: Tensor,
    logits: Tensor,
    targets: Tensor,
    *,
    lam_mse: float = 1.0,
    lam_cov: float = 0.04,
    lam_svd: float = 0.001,
) -> dict[str, Tensor]:
    """NMTune's objective [3]: CE + λ_mse·mse + λ_cov·cov - λ_svd·svd (defaults from its README).

    - mse: mean over all B×D entries of (normalize(h) - normalize(z).detach())², keeping h close to
      the pretrained features;
    - cov: (1/D)·Σ_{i≠j} Cov(h)_ij², the covariance of the mean-centred batch divided by B - 1;
    - svd: mean of the 5 largest σ_i / Σ_j σ_j over the singular values of the (uncentred) batch h.

    Args:
        z: [B, D] frozen features; h: [B, D] head features; logits: [B, C]; targets: [B] int64, B >= 2.

    Returns:
        {"loss": total, "ce", "mse", "cov", "svd": the unweighted terms}, all 0-d.
    """
    check_batch(logits, targets, "nmtune")
    if z.shape != h.shape or z.ndim != 2 or h.shape[0] != logits.shape[0]:
        raise ValueError(f"nmtune: expected z and h [B, D] matching logits [B, C], got {tuple(z.shape)}, "
                         f"{tuple(h.shape)}, {tuple(logits.shape)}")
    batch, dim = h.shape
    if batch < 2:
        raise ValueError("nmtune: the batch covariance needs B >= 2 samples; use a larger batch")
    # full precision even under autocast: SVD has no half kernel, and the covariance sums D² squares
    with torch.autocast(h.device.type, enabled=False):
        h = fp32(h)
        ce = F.cross_entropy(fp32(logits), targets)
        mse = F.mse_loss(F.normalize(h, dim=1), F.normalize(fp32(z), dim=1).detach())
        hc = h - h.mean(dim=0)
        cov_matrix = hc.T @ hc / (batch - 1)  # [D, D]
        cov = (cov_matrix.square().sum() - cov_matrix.diagonal().square().sum()) / dim
        sigma = torch.linalg.svdvals(h)  # [min(B, D)], descending
        svd = (sigma[:5] / sigma.sum()).mean()
    loss = ce + lam_mse * mse + lam_cov * cov - lam_svd * svd
    return {"loss": loss, "ce": ce, "mse": mse, "cov": cov, "svd": svd}


@dataclasses.dataclass
class HeadResult:
    """What `train_head` measured.

    Attributes:
        test_accuracy: top-1 % on the test set (eval mode).
        train_accuracy: % agreement with the given, possibly noisy, training labels (eval mode); with
            noisy labels a high value means the head memorised the noise.
        epochs: passes over the training set.
        robust: the method, one of ROBUST.
    """

    test_accuracy: float
    train_accuracy: float
    epochs: int
    robust: str


def _check_head_inputs(train_feats, train_labels, test_feats, test_labels, num_classes, robust) -> None:
    if robust not in ROBUST:
        raise ValueError(f"unknown robust method {robust!r}; choose one of {', '.join(ROBUST)}")
    if num_classes < 2:
        raise ValueError(f"train_head: num_classes must be >= 2, got {num_classes}")
    for name, feats, labels in (("train", train_feats, train_labels), ("test", test_feats, test_labels)):
        if feats.ndim != 2 or labels.ndim != 1 or feats.shape[0] != labels.shape[0]:
            raise ValueError(f"train_head: {name} features must be [N, D] and labels [N], got "
                             f"{tuple(feats.shape)} and {tuple(labels.shape)}")
        if feats.shape[0] == 0:
            raise ValueError(f"train_head: the {name} set is empty; pass at least one sample")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"train_head: {name} labels must be integers, got {labels.dtype}")
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"train_head: {name} labels must be in [0, {num_classes}); remap them to "
                             "0..num_classes-1 or raise num_classes")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"train_head: train and test feature dims differ ({train_feats.shape[1]} vs "
                         f"{test_feats.shape[1]})")


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A fresh permutation of range(n) in minibatches; a trailing batch of 1 joins the previous one
    (BatchNorm and NMTune's batch covariance need 2 samples), so no sample is ever dropped."""
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


@torch.no_grad()
def _accuracy(head: nn.Module, x: Tensor, y: Tensor, chunk: int = 4096) -> float:
    correct = 0
    for xc, yc in zip(x.split(chunk), y.split(chunk)):
        logits = head(xc)[1] if isinstance(head, NMTuneHead) else head(xc)
        correct += int((logits.argmax(dim=1) == yc).sum())
    return 100.0 * correct / len(y)


def train_head(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    robust: str = "none",
    epochs: int = 30,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    loss_kwargs: dict | None = None,
) -> HeadResult:
    """Train a head on cached features with a (robust) loss and report test and train top-1.

    Features are standardised with the training statistics. "none"/"gce"/"sce"/"elr" train a linear
    head (`nn.Linear`) with `make_loss(robust)`; "nmtune" trains `NMTuneHead` with `nmtune_loss`.
    AdamW over all parameters, cosine lr from `lr` over all steps without warmup (NMTune's recipe),
    minibatches reshuffled every epoch, none dropped. ELR's index is each sample's row in `train_feats`.
    Deterministic for a given seed; the caller's global RNG state is left untouched.

    Args:
        train_feats: [N, D] features; train_labels: [N] integer labels in [0, num_classes), possibly noisy.
        test_feats: [M, D]; test_labels: [M] (clean).
        num_classes: C. robust: one of ROBUST.
        epochs, lr, weight_decay, batch_size: the optimisation (defaults: NMTune's README).
        seed: seeds the head's init and the shuffling. device: where to train.
        loss_kwargs: passed to `make_loss` (e.g. {"q": 0.5}), or to `nmtune_loss` for "nmtune"
            (e.g. {"lam_cov": 0.0}).

    Returns:
        HeadResult.
    """
    _check_head_inputs(train_feats, train_labels, test_feats, test_labels, num_classes, robust)
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"train_head: need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    n, dim = train_feats.shape
    if robust == "nmtune" and (n < 2 or batch_size < 2):
        raise ValueError("train_head: nmtune needs >= 2 training samples and batch_size >= 2 (BatchNorm "
                         "and the batch covariance)")
    loss_kwargs = dict(loss_kwargs or {})
    x_train, x_test = standardise(*(f.detach().to(device, torch.float32) for f in (train_feats, test_feats)))
    y_train, y_test = (y.detach().to(device, torch.int64) for y in (train_labels, test_labels))

    with torch.random.fork_rng(devices=[]):  # built on the CPU under our seed, the caller's RNG untouched
        torch.manual_seed(seed)
        if robust == "nmtune":
            head, criterion = NMTuneHead(dim, num_classes), None
        else:
            head = nn.Linear(dim, num_classes)
            criterion = make_loss(robust, num_classes=num_classes, num_samples=n, **loss_kwargs).to(device)
    head.to(device).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    # batches per epoch, as `_batches` splits them (a trailing single sample joins the previous batch)
    per_epoch = math.ceil(n / batch_size) - (n > batch_size and n % batch_size == 1)
    total, step = epochs * per_epoch, 0

    for epoch in range(epochs):
        for idx in _batches(n, batch_size, generator):
            idx = idx.to(device)
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / total))
            x, y = x_train[idx], y_train[idx]  # [b, D], [b]
            if criterion is None:
                h, logits = head(x)
                loss = nmtune_loss(x, h, logits, y, **loss_kwargs)["loss"]
            else:
                loss = criterion(head(x), y, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if not torch.isfinite(loss):  # once per epoch: a check per step would sync the device each time
            raise FloatingPointError(f"train_head ({robust}): non-finite loss {loss.item()} at epoch {epoch}; "
                                     "lower lr or check the features for NaN/inf")
    head.eval()
    test_accuracy, train_accuracy = _accuracy(head, x_test, y_test), _accuracy(head, x_train, y_train)
    return HeadResult(test_accuracy, train_accuracy, epochs=epochs, robust=robust)
