"""Rate and quality targets for residual VQ runs: the stages to code, chosen per image.

A run of S stages codes any prefix 1..n of its stages (vqkit.codec.staged). For a target rate the
choice is the largest n whose actual bits per pixel (the image's bytes on disk, as ``ImageReport``
counts them) stay <= the target, else 1; for a target quality the smallest n whose decoded PSNR
reaches it, else S. Both are measured by compressing every image at every n with one entropy model
(for "auto", the one that wins at n = S), so the choice holds for the file written with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vqkit.codec.api import compress_images
from vqkit.codec.coding import CHOICE_MODELS, Coding
from vqkit.codec.container import CodecError


@dataclass(frozen=True)
class StageChoice:
    stages: list[int]  # n per image
    entropy_model: str  # the entropy model the choice was measured with (never "auto")
    bpp_actual: np.ndarray  # (S, N) actual bits per pixel of every image at every n
    psnr: np.ndarray  # (S, N) decoded PSNR (dB); NaN when only a rate target was measured


def choose_stages(
    coding: Coding,
    images: Sequence[np.ndarray],
    *,
    target_bpp: float | None = None,
    target_psnr: float | None = None,
    entropy_model: str = "auto",
    archive: bool = False,
    scale: float = 1.0,
) -> StageChoice:
    """The stages to code each image with for ``target_bpp`` or ``target_psnr`` (exactly one)."""
    if (target_bpp is None) == (target_psnr is None):
        raise ValueError("give exactly one of target_bpp and target_psnr")
    if coding.stages == 1:
        raise CodecError(
            f"{coding.run.path} has one stage of codes; --target-bpp and --target-psnr pick stages of "
            "residual VQ (rvq) runs (for a single-stage run, --scale sets the rate)"
        )
    s = coding.stages
    quality = target_psnr is not None
    model = entropy_model
    if model == "auto":  # the model auto picks at full rate codes every trial, and then the file
        model = compress_images(
            coding, images, entropy_model="auto", archive=archive, quality=False, scale=scale
        ).entropy_model
    if model not in CHOICE_MODELS:
        raise CodecError(f"unknown entropy model {model!r}")
    bpp = np.zeros((s, len(images)))
    psnr = np.full((s, len(images)), np.nan)
    for n in range(1, s + 1):
        result = compress_images(
            coding, images, entropy_model=model, archive=archive, quality=quality, scale=scale, stages=n
        )
        bpp[n - 1] = [r.bpp_actual for r in result.reports]
        psnr[n - 1] = [r.psnr for r in result.reports]
    if target_bpp is not None:
        fits = bpp <= target_bpp  # (S, N)
        # the largest n that fits, else 1
        chosen = [
            int(np.nonzero(fits[:, i])[0].max()) + 1 if fits[:, i].any() else 1 for i in range(len(images))
        ]
    else:
        assert target_psnr is not None
        good = psnr >= target_psnr
        chosen = [
            int(np.nonzero(good[:, i])[0].min()) + 1 if good[:, i].any() else s for i in range(len(images))
        ]
    return StageChoice(chosen, model, bpp, psnr)
