"""Denoising with a run trained corrupted -> clean (``data.corruption``): inference and scoring.

The model's reconstruction of a noisy image is its estimate of the clean one. Images of any size
work (the model pads to a multiple of its downsampling factor and crops back); large images go one
at a time, small ones in batches of at most ``max_pixels`` pixels.

Noisy test images are made as a user would have them on disk: the clean image plus the corruption
(``vqkit.data.corruptions``), clamped and rounded to 8 bits, seeded so every method sees the same.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqkit.data import iter_batches, to_float, to_uint8_hwc
from vqkit.data.corruptions import parse_corruption
from vqkit.metrics import psnr_per_image, ssim_per_image
from vqkit.runs import Run
from vqkit.training.evaluate import PSNR_CAP
from vqkit.visual import image_grid, save_png

MAX_PIXELS = 1 << 20  # pixels per inference batch: bounds activation memory for large photos


def denoise_images(run: Run, images: list[np.ndarray], max_pixels: int = MAX_PIXELS) -> list[np.ndarray]:
    """(H, W, C) uint8 images of any sizes -> the run's clean estimates, same sizes, same order."""
    out: list[np.ndarray] = []
    run.model.eval()
    for batch in iter_batches(images, 1 << 16):  # runs of equal size; split below by pixel budget
        h, w = batch[0].shape[:2]
        per = max(1, max_pixels // (h * w))
        for i in range(0, len(batch), per):
            out.extend(run.reconstruct(batch[i : i + per], batch_size=per))
    return out


def add_noise(images: list[np.ndarray], spec: str, seed: int = 0) -> list[np.ndarray]:
    """Corrupt each image with ``spec`` (e.g. "gaussian:25"), image i seeded by (seed, i); uint8 out."""
    corruption = parse_corruption(spec)
    out = []
    for i, im in enumerate(images):
        x = to_float(torch.from_numpy(np.array(im[None])))
        noisy = corruption(x, torch.Generator().manual_seed(seed * 1_000_003 + i))
        out.append(to_uint8_hwc(noisy)[0])
    return out


def quality(clean: list[np.ndarray], estimate: list[np.ndarray]) -> dict[str, float]:
    """Mean PSNR (dB, capped at PSNR_CAP) and SSIM of uint8 estimates against the clean images."""
    psnrs, ssims = [], []
    for ref, est in zip(clean, estimate, strict=True):
        a = to_float(torch.from_numpy(np.array(ref[None])))
        b = to_float(torch.from_numpy(np.array(est[None])))
        psnrs.append(float(psnr_per_image(a, b).clamp(max=PSNR_CAP)[0]))
        ssims.append(float(ssim_per_image(ref[None], est[None])[0]))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}


def evaluate_denoising(
    run: Run, clean: list[np.ndarray], sigmas: list[float], seed: int = 0, max_pixels: int = MAX_PIXELS
) -> dict[str, Any]:
    """Per Gaussian sigma (0-255 scale): quality of the noisy input and of the run's output, both
    against the clean images (the ``data`` of a "denoise" result document)."""
    rows = []
    for sigma in sigmas:
        noisy = add_noise(clean, f"gaussian:{sigma}", seed)
        start = time.perf_counter()
        denoised = denoise_images(run, noisy, max_pixels)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "sigma": sigma,
                "noisy": quality(clean, noisy),
                "denoised": {**quality(clean, denoised), "seconds_per_image": seconds / len(clean)},
            }
        )
    return {
        "num_images": len(clean),
        "seed": seed,
        "noise": "clean + N(0, sigma^2) on the 0-255 scale, clamped, rounded to 8 bits; seeded per image",
        "metrics": "PSNR (dB, capped at 100) and SSIM of 8-bit images against the clean images",
        "results": rows,
    }


def save_examples(
    run: Run, clean: list[np.ndarray], sigma: float, path: str | Path, count: int = 8, seed: int = 0
) -> None:
    """Rows: clean, noisy (Gaussian sigma), denoised, for the first ``count`` images."""
    clean = clean[:count]
    noisy = add_noise(clean, f"gaussian:{sigma}", seed)
    grid = image_grid([clean, noisy, denoise_images(run, noisy)])
    save_png(grid, path, scale=max(1, 96 // max(im.shape[0] for im in clean)))
