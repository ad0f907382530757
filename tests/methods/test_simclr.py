"""SimCLR: NT-Xent against the paper's loop, closed forms, invariances; the method's forward; registry; the
CIFAR recipes' optimizer against solo-learn's LARS step."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.utils.lars import LARS

from ssl_platform import config, pretrain
from ssl_platform.engine.optim import param_groups
from ssl_platform.methods import METHODS, Method, SimCLR, Supervised

ROOT = Path(__file__).resolve().parents[2]

TINY = {"small_input": True, "in_chans": 1, "backbone_kwargs": {"channels": [8, 16, 32, 64]}}


def naive_nt_xent(z0: torch.Tensor, z1: torch.Tensor, tau: float) -> float:
    """The paper's NT-Xent, one anchor at a time, in float64 Python arithmetic.

    z0, z1: [N, D]; view i of z0 and view i of z1 are partners. Anchors are all 2N views;
    each one's denominator runs over the 2N-1 other views.
    """
    z = torch.cat([z0, z1]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = z.shape[0]
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        s = [float(z[i] @ z[k]) / tau for k in range(n2)]
        denominator = sum(math.exp(s[k]) for k in range(n2) if k != i)
        total += -math.log(math.exp(s[j]) / denominator)
    return total / n2


def nt_xent(tau: float) -> NTXentLoss:
    """The loss exactly as SimCLR builds it."""
    return NTXentLoss(temperature=tau, gather_distributed=True)


def naive_pair_top1(z: torch.Tensor) -> float:
    """Fraction of the 2B views whose most cosine-similar other view is their partner."""
    z = z.double()
    n2 = z.shape[0]
    hits = 0
    for i in range(n2):
        best, best_k = -math.inf, None
        for k in range(n2):
            if k == i:
                continue
            cos = float(z[i] @ z[k] / (z[i].norm() * z[k].norm()))
            if cos > best:
                best, best_k = cos, k
        hits += best_k == (i + n2 // 2) % n2
    return hits / n2


def tiny_simclr(**kwargs) -> SimCLR:
    torch.manual_seed(0)
    return SimCLR("resnet18", proj_hidden_dim=32, proj_dim=16, **TINY, **kwargs)


def views(b=4, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 1, size, size, generator=g), torch.randn(b, 1, size, size, generator=g)]


def capture_output(module: torch.nn.Module) -> list[torch.Tensor]:
    outputs: list[torch.Tensor] = []
    module.register_forward_hook(lambda mod, args, out: outputs.append(out.detach().clone()))
    return outputs


# ---- NT-Xent: the loss SimCLR uses


def test_simclr_uses_lightly_nt_xent_with_its_temperature():
    model = tiny_simclr(temperature=0.2)
    assert isinstance(model.criterion, NTXentLoss)
    assert model.criterion.temperature == 0.2


@pytest.mark.parametrize("tau", [0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_nt_xent_matches_naive_paper_loop(tau, seed):
    g = torch.Generator().manual_seed(seed)
    z0, z1 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    assert float(nt_xent(tau)(z0, z1)) == pytest.approx(naive_nt_xent(z0, z1, tau), abs=1e-5)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_all_equal_embeddings_give_log_2n_minus_1(tau):
    n = 8
    z = torch.randn(1, 16).expand(n, 16).contiguous()
    assert float(nt_xent(tau)(z, z.clone())) == pytest.approx(math.log(2 * n - 1), abs=1e-5)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_orthonormal_pairs_closed_form(tau):
    n = 8
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    z = q[:n]  # n orthonormal rows
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / tau))
    assert float(nt_xent(tau)(z.float(), z.float())) == pytest.approx(expected, abs=1e-5)
    assert naive_nt_xent(z, z, tau) == pytest.approx(expected, abs=1e-9)  # the reference agrees


def test_nt_xent_invariant_to_rescaling_and_swapping_views():
    g = torch.Generator().manual_seed(4)
    z0, z1 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    loss = nt_xent(0.5)
    base = float(loss(z0, z1))
    scales = 0.1 + 10 * torch.rand(8, 1, generator=g)  # a positive scale per row
    assert float(loss(3.0 * z0, 0.25 * z1)) == pytest.approx(base, abs=1e-5)
    assert float(loss(scales * z0, z1 * scales.flip(0))) == pytest.approx(base, abs=1e-5)
    assert float(loss(z1, z0)) == pytest.approx(base, abs=1e-5)
    # not invariant to everything: breaking the pairing changes the value
    assert float(loss(z0, z1.roll(1, dims=0))) != pytest.approx(base, abs=1e-3)


def test_nt_xent_sends_gradients_to_both_views():
    g = torch.Generator().manual_seed(5)
    z0 = torch.randn(8, 16, generator=g, requires_grad=True)
    z1 = torch.randn(8, 16, generator=g, requires_grad=True)
    nt_xent(0.1)(z0, z1).backward()
    for grad in (z0.grad, z1.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---- SimCLR the method


def test_forward_returns_finite_scalar_loss_and_pair_top1():
    out = tiny_simclr()({"views": views()})
    assert set(out) == {"loss", "pair_top1"}
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["pair_top1"].ndim == 0 and 0.0 <= float(out["pair_top1"]) <= 1.0
    assert out["loss"].requires_grad and not out["pair_top1"].requires_grad


def test_backward_reaches_every_backbone_parameter():
    # timm zero-initialises each block's last BN gamma, which zeroes the gradient of the convs before
    # it at init; switch that off so "every parameter gets a non-zero gradient" is a sharp check
    torch.manual_seed(0)
    model = SimCLR(
        "resnet18", small_input=True, in_chans=1, proj_hidden_dim=32, proj_dim=16,
        backbone_kwargs={"channels": [8, 16, 32, 64], "zero_init_last": False},
    )
    model({"views": views()})["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if name.startswith("backbone."):
            assert p.grad.abs().sum() > 0, name


def test_backward_with_default_init_gives_finite_grads_to_backbone():
    model = tiny_simclr()
    model({"views": views()})["loss"].backward()
    grads = {n: p.grad for n, p in model.backbone.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["conv1.weight"].abs().sum() > 0
    assert all(grads[f"layer{i}.{j}.bn2.weight"].abs().sum() > 0 for i in range(1, 5) for j in range(2))


def test_loss_is_paper_nt_xent_of_the_projections():
    model = tiny_simclr(temperature=0.5)
    projections = capture_output(model.projection)
    out = model({"views": views()})
    (z,) = projections  # one pass over both views: [2B, proj_dim]
    z0, z1 = z.chunk(2)
    assert out["loss"].item() == pytest.approx(naive_nt_xent(z0, z1, 0.5), abs=1e-5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pair_top1_matches_naive_computation(seed):
    model = tiny_simclr()
    projections = capture_output(model.projection)
    out = model({"views": views(b=6, seed=seed)})
    assert float(out["pair_top1"]) == pytest.approx(naive_pair_top1(projections[0]), abs=1e-7)


def test_pair_top1_is_one_for_identical_views():
    model = tiny_simclr()
    x = views()[0]
    out = model({"views": [x, x.clone()]})
    assert float(out["pair_top1"]) == 1.0


def test_views_are_paired_by_position():
    # swapping the two views is the same problem; shuffling one of them is a different one
    model = tiny_simclr()
    x0, x1 = views()
    base = model({"views": [x0, x1]})["loss"].item()
    assert model({"views": [x1, x0]})["loss"].item() == pytest.approx(base, abs=1e-5)
    assert model({"views": [x0, x1.roll(1, dims=0)]})["loss"].item() != pytest.approx(base, abs=1e-4)


def test_embed_returns_backbone_features_not_projections():
    model = tiny_simclr().eval()
    image = views()[0]
    with torch.no_grad():
        feats = model.embed({"image": image})
        expected = model.backbone.forward_features(image).mean(dim=(2, 3))
    assert feats.shape == (4, model.backbone.num_features) == (4, 64)
    torch.testing.assert_close(feats, expected)


def test_ready_backbone_module_is_used_as_is():
    backbone = tiny_simclr().backbone
    model = SimCLR(backbone, proj_hidden_dim=32, proj_dim=16)
    assert model.backbone is backbone
    assert model.projection.layers[0].in_features == backbone.num_features


# ---- registry


def test_registry_maps_names_to_classes():
    assert METHODS["simclr"] is SimCLR
    assert METHODS["supervised"] is Supervised
    for name, cls in METHODS.items():
        assert issubclass(cls, Method), name


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_documents_its_batch_keys(name):
    doc = METHODS[name].__doc__ or ""
    assert "Batch keys" in doc, f"{name}: docstring must say which batch keys the method reads"


# ---- Supervised baseline


def tiny_supervised(**kwargs) -> Supervised:
    torch.manual_seed(0)
    return Supervised("resnet18", num_classes=5, **TINY, **kwargs)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_supervised_loss_is_cross_entropy_of_its_logits(label_smoothing):
    model = tiny_supervised(label_smoothing=label_smoothing)
    logits = capture_output(model.classifier)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    out = model({"image": torch.randn(6, 1, 16, 16), "label": labels})
    (z,) = logits
    assert z.shape == (6, 5)
    expected = F.cross_entropy(z, labels, label_smoothing=label_smoothing)
    assert out["loss"].item() == pytest.approx(float(expected), abs=1e-6)
    naive_acc = sum(int(z[i].argmax()) == int(labels[i]) for i in range(6)) / 6
    assert float(out["acc1"]) == pytest.approx(naive_acc)
    out["loss"].backward()
    assert torch.isfinite(model.backbone.conv1.weight.grad).all()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [-1, 5])
def test_supervised_refuses_labels_out_of_range(bad):
    model = tiny_supervised()
    with pytest.raises(ValueError, match="num_classes") as info:
        model({"image": torch.randn(3, 1, 16, 16), "label": torch.tensor([0, bad, 1])})
    assert "[0, 5)" in str(info.value)


# ---- the CIFAR recipes' optimizer: solo-learn's LARS


SOLO_LEARN_RECIPES = [ROOT / "recipes/simclr/resnet18_cifar10_1000ep.yaml", ROOT / "recipes/gsimclr/resnet18_cifar10_200ep.yaml"]


def solo_learn_lars_step(params, grads, buffers, *, lr, weight_decay, eta, momentum) -> dict[str, int]:
    """One step of solo-learn's LARS with `clip_lars_lr` and `exclude_bias_n_norm_lars` on (solo/utils/lars.py,
    the same semantics as the 2021 `LARSWrapper`), written out naively on plain tensors, in place.

    A 1-D parameter (bias, norm weight) takes a momentum-SGD step on its raw gradient: no decay, no
    adaptation. Any other one with non-zero weight and gradient norms takes d = (g + wd p) * r with
    r = min(eta |p| / (|g| + wd |p| + eps) / lr, 1); then buf = d (first step) or momentum buf + d, and
    p -= lr buf. Returns how often r was clipped to 1 and how often it was not.
    """
    seen = {"clipped": 0, "adapted": 0}
    for i, (p, g) in enumerate(zip(params, grads)):
        d = g.clone()
        if p.ndim != 1 and float(p.norm()) != 0 and float(g.norm()) != 0:
            local = eta * float(p.norm()) / (float(g.norm()) + float(p.norm()) * weight_decay + 1e-8) / lr
            seen["clipped" if local >= 1 else "adapted"] += 1
            d = (g + weight_decay * p) * min(local, 1.0)
        buffers[i] = d.clone() if buffers[i] is None else momentum * buffers[i] + d
        p -= lr * buffers[i]
    return seen


@pytest.mark.parametrize("path", SOLO_LEARN_RECIPES, ids=lambda p: p.parent.name)
def test_cifar_recipe_optimizer_steps_like_solo_learn_lars(path):
    cfg = pretrain.load_recipe(path)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3))
    groups = param_groups(model)  # the engine's groups: biases and norms in the weight-decay-0 group
    optimizer = config.instantiate(cfg.optimizer, params=groups)
    wd, eta, momentum = cfg.optimizer.weight_decay, 0.02, 0.9
    reference = [p.detach().clone() for p in model.parameters()]
    buffers, seen = [None] * len(reference), {"clipped": 0, "adapted": 0}
    g = torch.Generator().manual_seed(1)
    # lrs from the warm-up's smallest to above the peak: the clipping binds for some, not for others
    for lr in (0.001, 0.4, 0.05, 2.0, 0.4):
        grads = [torch.randn(p.shape, generator=g) * 10 ** float(torch.empty(()).uniform_(-2, 1, generator=g))
                 for p in reference]
        for p, grad in zip(model.parameters(), grads):
            p.grad = grad.clone()
        for group in optimizer.param_groups:  # what the engine's schedule sets before each step
            group["lr"], group["weight_decay"] = lr, wd * group["wd_scale"]
        optimizer.step()
        for key, n in solo_learn_lars_step(reference, grads, buffers, lr=lr, weight_decay=wd, eta=eta,
                                           momentum=momentum).items():
            seen[key] += n
        for p, expected in zip(model.parameters(), reference):
            torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)
    assert seen["clipped"] and seen["adapted"], seen  # both branches of the clipping were compared
    # the optimizer the recipes had before (lightly's LARS: trust coefficient 0.001, no clipping) is not it
    torch.manual_seed(0)
    old = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3))
    start = [p.detach().clone() for p in old.parameters()]
    lightly_lars = LARS(param_groups(old), lr=0.4, momentum=momentum, weight_decay=wd)
    for p in old.parameters():
        p.grad = torch.ones_like(p)
    lightly_lars.step()
    step = [(start[i] - p.detach()).norm() for i, p in enumerate(old.parameters())]
    fresh = [p.detach().clone() for p in start]
    solo_learn_lars_step(fresh, [torch.ones_like(p) for p in start], [None] * len(start), lr=0.4, weight_decay=wd,
                         eta=eta, momentum=momentum)
    assert step[0] < 0.2 * (start[0] - fresh[0]).norm()  # the conv weight moved far less
