"""Rate-distortion helpers: Pareto fronts and the Bjøntegaard delta rate (BD-rate).

BD-rate (Bjøntegaard, VCEG-M33, 2001; piecewise cubic variant as in VCEG-AL22 / JVET common test
conditions): fit log10(rate) as a monotone piecewise cubic (PCHIP) function of PSNR for each codec,
average the difference over the PSNR range both curves cover, and report ``10**diff - 1`` in percent.
Negative: the tested codec needs that many percent fewer bits than the anchor for the same quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator


@dataclass(frozen=True)
class BDRate:
    percent: float  # rate change of the tested codec against the anchor at equal quality
    quality_low: float  # the overlapping quality interval the average is taken over
    quality_high: float


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(rate, quality) points -> the ones no other point dominates, by increasing rate and quality."""
    front: list[tuple[float, float]] = []
    for rate, quality in sorted(points):
        if not np.isfinite(rate) or not np.isfinite(quality) or rate <= 0:
            continue
        if front and quality <= front[-1][1]:
            continue  # costs as much or more for no better quality
        if front and rate == front[-1][0]:
            front[-1] = (rate, quality)
        else:
            front.append((rate, quality))
    return front


def bd_rate(anchor: Sequence[tuple[float, float]], test: Sequence[tuple[float, float]]) -> BDRate | None:
    """BD-rate of ``test`` against ``anchor``, both lists of (bits per pixel, PSNR). None when either
    curve has fewer than two useful points or the curves share no quality range."""
    a, t = pareto_front(anchor), pareto_front(test)
    if len(a) < 2 or len(t) < 2:
        return None
    low, high = max(a[0][1], t[0][1]), min(a[-1][1], t[-1][1])
    if high <= low:
        return None

    def mean_log_rate(front: list[tuple[float, float]]) -> float:
        quality = np.array([q for _, q in front])
        log_rate = np.log10([r for r, _ in front])
        return float(PchipInterpolator(quality, log_rate).integrate(low, high)) / (high - low)

    diff = mean_log_rate(t) - mean_log_rate(a)
    return BDRate(percent=float((10.0**diff - 1.0) * 100.0), quality_low=low, quality_high=high)
