"""Per-step schedules against values computed by hand."""

from __future__ import annotations

import itertools
import math

import pytest

from ssl_platform.engine.schedules import cosine, warmup_cosine


def test_warmup_is_linear_from_base_over_warmup_steps():
    # 4 warm-up steps to base 0.8: steps 0..3 use 0.2, 0.4, 0.6, 0.8
    values = [warmup_cosine(s, total_steps=20, warmup_steps=4, base=0.8) for s in range(4)]
    assert values == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_peak_right_after_warmup():
    assert warmup_cosine(4, total_steps=20, warmup_steps=4, base=0.8, final=0.1) == pytest.approx(0.8)
    # the last warm-up step already uses the peak: no step ever exceeds it
    values = [warmup_cosine(s, 20, 4, 0.8, 0.1) for s in range(25)]
    assert max(values) == pytest.approx(0.8)
    assert values.count(max(values)) == 2  # steps 3 and 4


def test_cosine_midpoint_and_quarter():
    # cosine span = 20 - 4 = 16 steps; midpoint at step 4 + 8
    assert warmup_cosine(12, 20, 4, base=0.8, final=0.1) == pytest.approx(0.45)
    # a quarter in: final + (base - final) * (1 + cos(pi/4)) / 2
    quarter = 0.1 + 0.7 * (1 + math.sqrt(0.5)) / 2
    assert warmup_cosine(8, 20, 4, base=0.8, final=0.1) == pytest.approx(quarter)


def test_final_value_reached_at_total_steps_and_held():
    assert warmup_cosine(20, 20, 4, base=0.8, final=0.1) == pytest.approx(0.1)
    assert warmup_cosine(35, 20, 4, base=0.8, final=0.1) == pytest.approx(0.1)  # clamped past the end
    # the last step actually taken (19) is one cosine step short of final
    last = 0.1 + 0.35 * (1 + math.cos(math.pi * 15 / 16))
    assert warmup_cosine(19, 20, 4, base=0.8, final=0.1) == pytest.approx(last)


def test_monotone_decay_after_warmup():
    values = [warmup_cosine(s, 50, 5, 1.0, 0.01) for s in range(5, 51)]
    assert all(a > b for a, b in itertools.pairwise(values))


def test_no_warmup_starts_at_base():
    assert warmup_cosine(0, 10, 0, base=0.5) == pytest.approx(0.5)
    assert warmup_cosine(5, 10, 0, base=0.5) == pytest.approx(0.25)
    assert warmup_cosine(10, 10, 0, base=0.5) == pytest.approx(0.0)


def test_warmup_longer_than_run_still_defined():
    # a 3-step smoke run with a 10-step warm-up: linear ramp, never a division by zero
    assert [warmup_cosine(s, 3, 10, 1.0) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.parametrize("total", [0, -5])
def test_nonpositive_total_steps_raises(total):
    with pytest.raises(ValueError, match=f"total_steps must be positive, got {total}"):
        warmup_cosine(0, total, 0, 1.0)


def test_cosine_endpoints_and_midpoint():
    assert cosine(0.0, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine(1.0, 0.04, 0.4) == pytest.approx(0.4)
    assert cosine(0.5, 0.04, 0.4) == pytest.approx(0.22)
    assert cosine(0.25, 1.0, 0.0) == pytest.approx((1 + math.sqrt(0.5)) / 2)


def test_cosine_clamps_progress():
    assert cosine(-0.5, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine(1.5, 0.04, 0.4) == pytest.approx(0.4)
