"""BD-rate and Pareto fronts against cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from vqkit.codec.rd import bd_rate, pareto_front

CURVE = [(0.25, 26.0), (0.5, 29.0), (1.0, 32.5), (2.0, 36.0)]


def test_identical_curves_have_zero_bd_rate() -> None:
    result = bd_rate(CURVE, CURVE)
    assert result is not None and result.percent == pytest.approx(0.0, abs=1e-9)
    assert (result.quality_low, result.quality_high) == (26.0, 36.0)


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.3])
def test_scaled_rates_give_the_scale(factor: float) -> None:
    scaled = [(r * factor, q) for r, q in CURVE]
    result = bd_rate(CURVE, scaled)
    assert result is not None and result.percent == pytest.approx((factor - 1) * 100, rel=1e-9)


def test_partial_overlap_uses_only_the_shared_range() -> None:
    shifted = [(r, q + 5.0) for r, q in CURVE]  # 5 dB better everywhere
    result = bd_rate(CURVE, shifted)
    assert result is not None and result.percent < -30
    assert (result.quality_low, result.quality_high) == (31.0, 36.0)


def test_no_overlap_or_too_few_points_gives_none() -> None:
    assert bd_rate(CURVE, [(r, q + 20) for r, q in CURVE]) is None
    assert bd_rate(CURVE, [(1.0, 30.0)]) is None


def test_pareto_front_drops_dominated_and_invalid_points() -> None:
    points = [(1.0, 30.0), (0.5, 31.0), (2.0, 29.0), (0.5, 28.0), (3.0, 35.0), (0.0, 40.0), (4.0, np.nan)]
    assert pareto_front(points) == [(0.5, 31.0), (3.0, 35.0)]
