"""Encoder-side code search: pick codes for what the decoder makes of them, not for latent distance.

The VQ-VAE encoder picks, per position, the code nearest to the encoder output. That code is not
always the one whose *decoded* image is closest to the input, because the decoder mixes neighbouring
codes. The search starts from the nearest codes and, in raster order, tries each position's few
nearest codes (``candidates``), keeping the one that lowers

    J = squared error (8-bit units, summed over pixels and channels) + lmbda * bits,

where bits is the code's cost under the run's static entropy table (a proxy when a file is coded
with the prior; no rate term when the run has no table). ``passes`` repeats the sweep. The decoder,
the file format and decoding speed are untouched: this only chooses better indices, at an encoding
cost of about passes x candidates x h x w decodes of a window per image.

A code reaches the output pixels within ``influence_radius`` code cells of it, and those depend only
on codes within twice that radius, so each trial decodes that window alone (clipped at the image
border, where the decoder's zero padding then matches the full decode), and the error is summed
over the reachable pixels only: exact, and independent of the image size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vqkit.config import ModelConfig
from vqkit.data import to_float
from vqkit.run import Run


@dataclass(frozen=True)
class SearchConfig:
    passes: int = 2  # raster sweeps over all positions
    candidates: int = 4  # nearest codes tried per position (the nearest included)
    lmbda: float = 2000.0  # squared error (8-bit units) a bit is worth

    def __post_init__(self) -> None:
        if self.passes < 1:
            raise ValueError(f"search passes must be >= 1, got {self.passes}")
        if self.candidates < 2:
            raise ValueError(f"search candidates must be >= 2, got {self.candidates}")
        if not self.lmbda >= 0:
            raise ValueError(f"search lambda must be >= 0, got {self.lmbda}")


def influence_radius(cfg: ModelConfig) -> int:
    """Code cells a code can reach in the decoded image (conservative): one per 3x3 convolution at
    the latent grid (the first layer and one per residual block) and one per upsampling layer."""
    return 1 + cfg.res_blocks + int(np.log2(cfg.downsample))


def window_sse(
    run: Run, x: torch.Tensor, idx: torch.Tensor, options: torch.Tensor, i: int, j: int
) -> torch.Tensor:
    """Squared error (8-bit units) of the pixels code (i, j) reaches, for each option at (i, j).

    x (B, C, H, W) float images; idx (B, h, w) current codes; options (B, k) codes to try at (i, j).
    Returns (B, k). Differences between options equal those of whole-image errors: no other pixel
    depends on code (i, j), and the scored pixels depend only on the decoded window."""
    f, r = run.model.downsample, influence_radius(run.model.config)
    b, k = options.shape
    (h, w), (height, width) = idx.shape[1:], x.shape[2:]
    # Window of codes decoded (p, q) and of code cells scored (e, g), clipped to the grid.
    p0, p1, q0, q1 = max(0, i - 2 * r), min(h, i + 2 * r + 1), max(0, j - 2 * r), min(w, j + 2 * r + 1)
    e0, e1, g0, g1 = max(0, i - r), min(h, i + r + 1), max(0, j - r), min(w, j + r + 1)
    y0, y1, x0, x1 = e0 * f, min(e1 * f, height), g0 * f, min(g1 * f, width)  # scored pixels
    trials = idx[:, None, p0:p1, q0:q1].repeat(1, k, 1, 1)  # (B, k, ph, pw)
    trials[:, :, i - p0, j - q0] = options
    out = run.fast_decoder(trials.flatten(0, 1)).clamp(0, 1)  # (B*k, C, ph*f, pw*f)
    out = out[..., y0 - p0 * f : y1 - p0 * f, x0 - q0 * f : x1 - q0 * f].float()
    diff = out.unflatten(0, (b, k)) - x[:, None, :, y0:y1, x0:x1]
    return diff.square().sum((2, 3, 4)) * 255.0**2


def search_grids(
    run: Run,
    images: np.ndarray,
    config: SearchConfig,
    code_bits: np.ndarray | None = None,
    progress: Callable[[int], object] | None = None,
) -> np.ndarray:
    """(B, H, W, C) uint8 images of one size -> (B, h, w) int64 grids chosen by the search.

    ``code_bits`` (K,) is the rate of each code in bits (None: distortion only). ``progress(n)`` is
    told of every n image-positions done (B per position; all passes' worth by the end)."""
    model = run.model
    with run.inference():
        x = to_float(torch.from_numpy(np.ascontiguousarray(images)).to(run.device))
        x = x.contiguous(memory_format=torch.channels_last)  # (B, C, H, W)
        k = min(config.candidates, model.codebook_size)
        cand = model.quantizer.candidates(model.encode_latents(x), k)  # (B, h, w, k)
        idx = cand[..., 0].clone()  # (B, h, w): the plain encoder's codes
        bits = None if code_bits is None else torch.as_tensor(code_bits, dtype=torch.float32, device=x.device)
        x = x.float()
        rows = torch.arange(len(idx), device=x.device)
        b, h, w = idx.shape
        for done in range(config.passes):
            changed = 0
            for i in range(h):
                for j in range(w):
                    cost = window_sse(run, x, idx, cand[:, i, j], i, j)  # (B, k)
                    if bits is not None:
                        cost = cost + config.lmbda * bits[cand[:, i, j]]
                    best = cand[rows, i, j, cost.argmin(1)]
                    changed += int((best != idx[:, i, j]).sum())
                    idx[:, i, j] = best
                    if progress is not None:
                        progress(b)
            if not changed:  # a fixed point: further passes would change nothing
                if progress is not None:
                    progress(b * h * w * (config.passes - done - 1))
                break
    return idx.cpu().numpy()
