"""Noisy-label losses and heads: each loss against a per-sample loop, ELR's table, NMTune's terms, and
`train_head` on Gaussian blobs, clean and with 60% symmetric noise."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl_platform.evaluation.robust import ROBUST, NMTuneHead, nmtune_loss, train_head
from ssl_platform.evaluation.robust_losses import LOSSES, CrossEntropy, ELRLoss, GCELoss, SCELoss, make_loss

ROOT = Path(__file__).resolve().parents[2]


def _batch(b=7, c=5, seed=0):
    """float64 logits [b, c] spread wide enough to reach the clamps, int64 targets [b]."""
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(b, c, generator=g, dtype=torch.float64), torch.randint(0, c, (b,), generator=g)


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def _naive_ce(logits, targets, eps=0.0):
    total = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        p = _softmax(row)
        total += (1 - eps) * -math.log(p[y]) + eps * sum(-math.log(pk) for pk in p) / len(p)
    return total / len(targets)


def _naive_gce(logits, targets, q):
    return sum((1 - _softmax(r)[y] ** q) / q for r, y in zip(logits.tolist(), targets.tolist())) / len(targets)


def _naive_sce(logits, targets, alpha, beta, clamp):
    total = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        p = _softmax(row)
        rce = -sum(pk * math.log(max(1.0 if k == y else 0.0, clamp)) for k, pk in enumerate(p))
        total += alpha * -math.log(p[y]) + beta * rce
    return total / len(targets)


def _naive_elr(table, logits, targets, index, beta, lam, training):
    """Updates `table` (a list of lists) in place like ELR, then returns the mean loss."""
    probs = [[min(max(v, 1e-4), 1 - 1e-4) for v in _softmax(r)] for r in logits.tolist()]
    if training:
        for i, p in zip(index.tolist(), probs):
            table[i] = [beta * t + (1 - beta) * pk / sum(p) for t, pk in zip(table[i], p)]
    total = 0.0
    for row, y, i, p in zip(logits.tolist(), targets.tolist(), index.tolist(), probs):
        inner = sum(t * pk for t, pk in zip(table[i], p))
        total += -math.log(_softmax(row)[y]) + lam * math.log(1 - inner)
    return total / len(targets)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_matches_loop_and_torch(eps):
    logits, targets = _batch()
    got = CrossEntropy(label_smoothing=eps)(logits, targets).item()
    assert got == pytest.approx(_naive_ce(logits, targets, eps), rel=1e-12)
    assert got == pytest.approx(F.cross_entropy(logits, targets, label_smoothing=eps).item(), rel=1e-12)


@pytest.mark.parametrize("q", [0.3, 0.7, 1.0])
def test_gce_matches_loop(q):
    logits, targets = _batch()
    assert GCELoss(q)(logits, targets).item() == pytest.approx(_naive_gce(logits, targets, q), rel=1e-12)


def test_gce_limits():
    logits, targets = _batch()
    # q -> 0: (1 - p^q) / q -> -log p, the error shrinking like q (log p)^2 / 2
    ce = _naive_ce(logits, targets)
    errors = [abs(GCELoss(q)(logits, targets).item() - ce) for q in (1e-2, 1e-4, 1e-6)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5 * ce
    # q = 1: mean(1 - p_y), i.e. half the L1 distance between p and the one-hot
    mae = sum(1 - _softmax(r)[y] for r, y in zip(logits.tolist(), targets.tolist())) / len(targets)
    assert GCELoss(1.0)(logits, targets).item() == pytest.approx(mae, rel=1e-12)
    for q in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="q must be in"):
            GCELoss(q)


@pytest.mark.parametrize("alpha,beta,clamp", [(0.1, 1.0, 1e-4), (6.0, 0.1, math.exp(-4))])
def test_sce_matches_loop(alpha, beta, clamp):
    logits, targets = _batch()
    got = SCELoss(alpha, beta, clamp)(logits, targets).item()
    assert got == pytest.approx(_naive_sce(logits, targets, alpha, beta, clamp), rel=1e-12)


def test_sce_rce_is_minus_a_times_one_minus_py():
    logits, targets = _batch()
    p_y = [_softmax(r)[y] for r, y in zip(logits.tolist(), targets.tolist())]
    expected = -math.log(1e-4) * sum(1 - p for p in p_y) / len(p_y)
    assert SCELoss(alpha=0.0, beta=1.0)(logits, targets).item() == pytest.approx(expected, rel=1e-10)


def test_elr_matches_loop_over_two_visits():
    beta, lam, n, c = 0.7, 3.0, 6, 5
    elr = ELRLoss(n, c, beta=beta, lam=lam).double()
    table = [[0.0] * c for _ in range(n)]
    calls = [(_batch(3, c, seed=1), torch.tensor([0, 1, 2])), (_batch(3, c, seed=2), torch.tensor([2, 3, 0]))]
    for (logits, targets), index in calls:
        expected = _naive_elr(table, logits, targets, index, beta, lam, training=True)
        assert elr(logits, targets, index).item() == pytest.approx(expected, rel=1e-10)
        np.testing.assert_allclose(elr.target_ema.numpy(), np.array(table), rtol=0, atol=1e-12)
    # row 0, visited twice from zero: (1 - β)·β·p̂₁ + (1 - β)·p̂₂ with p̂ the clamped, renormalised softmax
    p_hat = []
    for (logits, _), index in calls:
        p = F.softmax(logits, dim=1).clamp(1e-4, 1 - 1e-4)[index.tolist().index(0)]
        p_hat.append(p / p.sum())
    torch.testing.assert_close(elr.target_ema[0], (1 - beta) * beta * p_hat[0] + (1 - beta) * p_hat[1])
    # rows never visited stay at zero
    assert elr.target_ema[4:].abs().sum().item() == 0.0


def test_elr_eval_mode_reads_but_does_not_update():
    elr = ELRLoss(4, 5).double()
    (logits, targets), index = _batch(2, 5, seed=3), torch.tensor([1, 3])
    elr(logits, targets, index)
    before = elr.target_ema.clone()
    table = before.tolist()
    elr.eval()
    logits2, targets2 = _batch(2, 5, seed=4)
    got = elr(logits2, targets2, index).item()
    assert torch.equal(elr.target_ema, before)
    assert got == pytest.approx(_naive_elr(table, logits2, targets2, index, 0.7, 3.0, training=False), rel=1e-10)


def test_elr_needs_a_valid_index():
    logits, targets = _batch(3, 5)
    elr = ELRLoss(4, 5)
    with pytest.raises(ValueError, match="index is required"):
        elr(logits, targets)
    with pytest.raises(ValueError, match="num_samples=4"):
        elr(logits, targets, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="beta .the EMA momentum. in"):
        ELRLoss(4, 5, beta=1.0)


def test_every_loss_has_the_same_call_and_a_gradient():
    logits, targets = _batch(4, 3)
    for name in LOSSES:
        loss_fn = make_loss(name, num_classes=3, num_samples=10).double()
        x = logits.clone().requires_grad_(True)
        loss = loss_fn(x, targets, torch.tensor([5, 6, 7, 9]))
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss) and x.grad.abs().sum() > 0, name


def test_make_loss():
    assert isinstance(make_loss("none", num_classes=3, num_samples=5, label_smoothing=0.1), CrossEntropy)
    assert make_loss("gce", num_classes=3, num_samples=5, q=0.4).q == 0.4
    assert make_loss("sce", num_classes=3, num_samples=5, alpha=6.0).alpha == 6.0
    elr = make_loss("elr", num_classes=3, num_samples=5, lam=7.0)
    assert elr.lam == 7.0 and elr.target_ema.shape == (5, 3)
    for bad in ("nmtune", "mae", "GCE"):
        with pytest.raises(ValueError, match="none, gce, sce, elr"):
            make_loss(bad, num_classes=3, num_samples=5)
    with pytest.raises(ValueError, match="only valid with loss 'none'"):
        make_loss("gce", num_classes=3, num_samples=5, label_smoothing=0.1)


def _naive_nmtune_terms(z, h, logits, targets):
    zl, hl = z.tolist(), h.tolist()
    b, d = len(hl), len(hl[0])
    mse = 0.0
    for zr, hr in zip(zl, hl):
        zn, hn = math.sqrt(sum(v * v for v in zr)), math.sqrt(sum(v * v for v in hr))
        mse += sum((hv / hn - zv / zn) ** 2 for hv, zv in zip(hr, zr))
    mean = [sum(hr[j] for hr in hl) / b for j in range(d)]
    cov = 0.0
    for i in range(d):
        for j in range(d):
            if i != j:
                cij = sum((hr[i] - mean[i]) * (hr[j] - mean[j]) for hr in hl) / (b - 1)
                cov += cij**2
    sigma = np.linalg.svd(h.numpy(), compute_uv=False)
    return {"ce": _naive_ce(logits, targets), "mse": mse / (b * d), "cov": cov / d,
            "svd": float(np.mean(sigma[:5] / sigma.sum()))}


@pytest.mark.parametrize("b", [3, 8])
def test_nmtune_loss_terms_match_naive(b):
    g = torch.Generator().manual_seed(5)
    z, h = torch.randn(b, 7, generator=g, dtype=torch.float64), torch.randn(b, 7, generator=g, dtype=torch.float64)
    logits, targets = _batch(b, 4, seed=6)
    got = nmtune_loss(z, h, logits, targets, lam_mse=0.5, lam_cov=0.2, lam_svd=0.3)
    ref = _naive_nmtune_terms(z, h, logits, targets)
    for key, value in ref.items():
        assert got[key].item() == pytest.approx(value, rel=1e-10), key
    total = ref["ce"] + 0.5 * ref["mse"] + 0.2 * ref["cov"] - 0.3 * ref["svd"]
    assert got["loss"].item() == pytest.approx(total, rel=1e-10)


def test_nmtune_loss_pulls_h_not_z():
    z = torch.randn(6, 4, requires_grad=True)
    h = torch.randn(6, 4, requires_grad=True)
    nmtune_loss(z, h, torch.randn(6, 3), torch.randint(0, 3, (6,)))["loss"].backward()
    assert z.grad is None and h.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="B >= 2"):
        nmtune_loss(z[:1], h[:1], torch.randn(1, 3), torch.tensor([0]))


def test_nmtune_head():
    torch.manual_seed(0)
    head = NMTuneHead(64, 10, res_scale_init=0.5)
    z = torch.randn(8, 64)
    h, logits = head(z)
    assert h.shape == (8, 64) and logits.shape == (8, 10)
    assert head.mlp[0].out_features == 256 and isinstance(head.mlp[1], torch.nn.BatchNorm1d)
    assert torch.equal(head.res_scale.detach(), torch.full((64,), 0.5))
    # Kaiming-uniform (gain √2): bound √(6/D), 2.45x nn.Linear's default 1/√D
    bound = math.sqrt(6 / 64)
    assert 0.9 * bound < head.classifier.weight.abs().max().item() <= bound
    assert head.classifier.bias.abs().sum().item() == 0.0
    with torch.no_grad():
        head.res_scale.zero_()
    h, logits = head(z)
    assert torch.equal(h, z)
    torch.testing.assert_close(logits, z @ head.classifier.weight.T)


def _blobs(seed, n=200, m=1000, c=4, d=256, sep=2.0, noise=0.0):
    """Gaussian blobs with means of norm sep·√d/4; `noise` of the train labels resampled uniformly over
    all classes (sym-inclusive, the ELR convention). Returns x [n, d], noisy y [n], x_test, y_test, clean y."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(c, d, generator=g)
    mu = mu / mu.norm(dim=1, keepdim=True) * sep * d**0.5 / 4
    y, y_test = torch.arange(n) % c, torch.arange(m) % c
    x, x_test = mu[y] + torch.randn(n, d, generator=g), mu[y_test] + torch.randn(m, d, generator=g)
    noisy, k = y.clone(), round(noise * n)
    noisy[torch.randperm(n, generator=g)[:k]] = torch.randint(0, c, (k,), generator=g)
    return x, noisy, x_test, y_test, y


@pytest.mark.parametrize("robust", ROBUST)
def test_train_head_separates_blobs(robust):
    x, y, xt, yt, _ = _blobs(0, n=300, m=300, c=3, d=8, sep=8.0)
    # shifted and scaled features: standardisation must undo it
    res = train_head(100 * x + 1e3, y, 100 * xt + 1e3, yt, num_classes=3, robust=robust, epochs=20, lr=3e-2)
    assert res.test_accuracy >= 97.0 and res.train_accuracy >= 97.0
    assert (res.epochs, res.robust) == (20, robust)


def test_train_head_is_deterministic_and_leaves_the_global_rng_alone():
    x, y, xt, yt, _ = _blobs(1, n=65, m=200, d=32, sep=1.0, noise=0.5)  # 65: a batch of 1 at the end
    for robust in ("elr", "nmtune"):
        state = torch.get_rng_state()
        first = train_head(x, y, xt, yt, num_classes=4, robust=robust, epochs=3, seed=3)
        assert torch.equal(torch.get_rng_state(), state)
        assert train_head(x, y, xt, yt, num_classes=4, robust=robust, epochs=3, seed=3) == first


@pytest.mark.slow
def test_robust_losses_resist_symmetric_noise():
    """60% sym-inclusive noise (45% of labels wrong), d > n: CE memorises the noise, ELR does not."""
    x, y, xt, yt, clean = _blobs(0, noise=0.6)
    assert 0.40 < (y != clean).double().mean().item() < 0.50
    res = {r: train_head(x, y, xt, yt, num_classes=4, robust=r, epochs=100) for r in ("none", "gce", "elr")}
    assert res["none"].train_accuracy > 90.0, "the setting must let CE memorise the noisy labels"
    # measured at these seeds: CE 68.9 / 94.0, GCE 74.6 / 88.5, ELR 100.0 / 56.0 (test / train agreement)
    assert res["gce"].test_accuracy >= res["none"].test_accuracy
    assert res["gce"].train_accuracy < res["none"].train_accuracy
    assert res["elr"].test_accuracy >= res["none"].test_accuracy + 20.0
    assert res["elr"].train_accuracy < 70.0


def test_train_head_validates_inputs():
    x, y, xt, yt, _ = _blobs(0, n=20, m=10, d=4)
    with pytest.raises(ValueError, match="none, gce, sce, elr, nmtune"):
        train_head(x, y, xt, yt, num_classes=4, robust="coteach")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        train_head(x, y + 1, xt, yt, num_classes=4)
    with pytest.raises(ValueError, match="test set is empty"):
        train_head(x, y, xt[:0], yt[:0], num_classes=4)
    with pytest.raises(ValueError, match="must be \\[N, D\\] and labels \\[N\\]"):
        train_head(x, y[:-1], xt, yt, num_classes=4)
    with pytest.raises(ValueError, match="dims differ"):
        train_head(x, y, xt[:, :3], yt, num_classes=4)
    with pytest.raises(ValueError, match="integers"):
        train_head(x, y.float(), xt, yt, num_classes=4)
    with pytest.raises(ValueError, match="batch_size >= 2"):
        train_head(x, y, xt, yt, num_classes=4, robust="nmtune", batch_size=1)


# ELR under DDP: 2 gloo processes

_ELR_WORKER = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    from ssl_platform.evaluation.robust_losses import ELRLoss

    rank, out = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)
    index = [torch.tensor([0, 2, 4]), torch.tensor([1, 4])][rank]  # uneven; sample 4 on both ranks
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logits = logits[:3] if rank == 0 else logits[3:]
    elr = ELRLoss(6, 3).double()
    loss = elr(logits, torch.zeros(len(index), dtype=torch.int64), index)
    torch.save({"table": elr.target_ema, "loss": loss.detach()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()
""")


@pytest.mark.dist
def test_elr_table_is_identical_on_every_rank(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _ELR_WORKER, str(r), str(tmp_path)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stdout.read()
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    # one process on the global batch, sample 4 updated once with its first (rank 0) occurrence
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    table = [[0.0] * 3 for _ in range(6)]
    _naive_elr(table, logits[:3], torch.zeros(3, dtype=torch.int64), torch.tensor([0, 2, 4]), 0.7, 3.0, True)
    _naive_elr(table, logits[3:4], torch.zeros(1, dtype=torch.int64), torch.tensor([1]), 0.7, 3.0, True)
    for r in (0, 1):
        np.testing.assert_allclose(got[r]["table"].numpy(), np.array(table), rtol=0, atol=1e-12)
    # rank 1's loss uses the updated rows, 4 included
    ref1 = _naive_elr(table, logits[3:], torch.zeros(2, dtype=torch.int64), torch.tensor([1, 4]), 0.7, 3.0, False)
    assert got[1]["loss"].item() == pytest.approx(ref1, rel=1e-10)
