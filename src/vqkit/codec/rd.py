"""Rate-distortion: a run's own codec measured on a set of images, Pareto fronts and the Bjøntegaard
delta rate (BD-rate).

``rate_distortion`` compresses the images with each entropy model the run has, at each coding scale,
through the public API (``compress_images``), so its rates are those of real files: actual bpp is the
files' bytes, estimated bpp the model's -log2 p, nominal bpp log2(K) per code.

BD-rate (Bjøntegaard, VCEG-M33, 2001; piecewise cubic variant as in VCEG-AL22 / JVET common test
conditions): fit log10(rate) as a monotone piecewise cubic (PCHIP) function of PSNR for each codec,
average the difference over the PSNR range both curves cover, and report ``10**diff - 1`` in percent.
Negative: the tested codec needs that many percent fewer bits than the anchor for the same quality.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.interpolate import PchipInterpolator

from vqkit.codec.api import compress_images
from vqkit.codec.coding import Coding
from vqkit.codec.search import SearchConfig

# summary() keys each rate-distortion point keeps
POINT_KEYS = ("images", "pixels", "bytes_total", "bytes_header", "bpp_nominal", "bpp_estimated",
              "bpp_actual", "psnr", "ssim")  # fmt: skip


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


def available_models(coding: Coding) -> list[str]:
    """The entropy models a run can code with, by --entropy-model name: raw always, static when its
    table is fitted, prior when a prior is trained."""
    return [
        "raw",
        *(["static"] if coding.has_static() else []),
        *(["prior"] if coding.prior() is not None else []),
    ]


def rate_distortion(
    coding: Coding,
    images: Sequence[np.ndarray],
    entropy_models: Sequence[str],
    scales: Sequence[float] = (1.0,),
    search: SearchConfig | None = None,
    names: Sequence[str] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One point per (scale, entropy model): the files' rates (bpp nominal / estimated / actual),
    PSNR and SSIM of what decompression gives, and compress_images' wall time (encoding, entropy
    coding, and the decode that measures quality) as seconds and images/s."""
    points = []
    for scale in scales:
        for model in entropy_models:
            start = time.perf_counter()
            result = compress_images(
                coding,
                images,
                entropy_model=model,
                names=names,
                search=search,
                progress=progress,
                scale=scale,
            )
            seconds = time.perf_counter() - start
            summary = result.summary()
            points.append(
                {
                    "entropy_model": summary["entropy_model"],
                    "scale": scale,
                    **{k: summary[k] for k in POINT_KEYS},
                    "seconds": seconds,
                    "images_per_s": len(images) / seconds,
                }
            )
    return points
