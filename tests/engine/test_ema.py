"""The EMA target: exact update rule, the linear momentum schedule, no gradients."""

import pytest
import torch
from torch import nn

from ssl_platform.engine.ema import ema_update, frozen_copy, linear_momentum


def test_update_is_exactly_the_convex_combination_and_m1_is_a_no_op():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    target = frozen_copy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o, atol=1e-7, rtol=0)
    still = [p.clone() for p in target.parameters()]
    ema_update(target, online, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), still))


def test_frozen_copy_is_independent_and_gets_no_gradient():
    online = nn.Linear(3, 2)
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters()) and all(p.requires_grad for p in online.parameters())
    assert target.weight.data_ptr() != online.weight.data_ptr()
    (target(torch.randn(5, 3)).sum() + online(torch.randn(5, 3)).sum()).backward()
    assert target.weight.grad is None and online.weight.grad is not None


def test_linear_momentum_schedule():
    assert linear_momentum(0.0) == 0.996 and linear_momentum(1.0) == 1.0
    assert linear_momentum(0.5) == pytest.approx(0.998)
    assert linear_momentum(2.0, 0.99, 0.999) == 0.999 and linear_momentum(-1.0, 0.99, 0.999) == 0.99
    with pytest.raises(ValueError, match="start <= end"):
        linear_momentum(0.5, 0.999, 0.99)
