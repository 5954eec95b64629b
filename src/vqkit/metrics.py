"""Image quality and codebook health metrics.

PSNR is computed on 8-bit rounded images (what a user saves to disk), per image, then averaged.
Codebook health is measured over a whole evaluation set, never one batch (STYLE.md item 10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from skimage.metrics import structural_similarity


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> the same floats rounded to the 256 levels an 8-bit file stores."""
    return (images.clamp(0, 1) * 255).round() / 255


def psnr_per_image(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for (B, C, H, W) images in [0, 1] after 8-bit rounding -> (B,).
    Identical images give +inf (callers cap it when averaging)."""
    ref = quantize_8bit(reference.float()) * 255
    out = quantize_8bit(test.float()) * 255
    mse = (ref - out).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse)


def ssim_per_image(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """SSIM (Wang et al. 2004, 7x7 uniform window as scikit-image defaults) for uint8 (B, H, W, C).

    Images smaller than 7x7 use the largest odd window that fits; below 3x3 SSIM is undefined (its
    sample covariance divides by window pixels - 1) and the image gets NaN. The data loaders refuse
    such images (vqkit.data.datasets.MIN_IMAGE_SIDE), so NaN appears only for arrays passed in."""
    out = np.empty(len(reference))
    for i, (a, b) in enumerate(zip(reference, test, strict=True)):
        h, w = a.shape[:2]
        win = min(7, h, w)
        win -= 1 - win % 2  # odd
        if win < 3:
            out[i] = np.nan
            continue
        out[i] = structural_similarity(a, b, channel_axis=2, data_range=255, win_size=win)
    return out


def nominal_bpp(codebook_size: int, grid_hw: tuple[int, int], image_hw: tuple[int, int]) -> float:
    """log2(K) bits per code, spread over the image's pixels."""
    return math.log2(codebook_size) * grid_hw[0] * grid_hw[1] / (image_hw[0] * image_hw[1])


@dataclass
class CodebookUsage:
    """Accumulates code counts over many batches; health figures over all of them."""

    codebook_size: int
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.codebook_size, dtype=np.int64)

    def update(self, indices: torch.Tensor) -> None:
        flat = indices.reshape(-1).cpu()
        self.counts += torch.bincount(flat, minlength=self.codebook_size).numpy()

    @property
    def probabilities(self) -> np.ndarray:
        return self.counts / max(int(self.counts.sum()), 1)

    @property
    def usage(self) -> float:
        """Fraction of codes used at least once."""
        return float((self.counts > 0).mean())

    @property
    def dead_codes(self) -> int:
        return int((self.counts == 0).sum())

    @property
    def perplexity(self) -> float:
        """exp(entropy) of the code histogram: the effective number of codes in use."""
        p = self.probabilities[self.counts > 0]
        return float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0

    @property
    def entropy_bits(self) -> float:
        p = self.probabilities[self.counts > 0]
        return float(-(p * np.log2(p)).sum()) if p.size else 0.0
