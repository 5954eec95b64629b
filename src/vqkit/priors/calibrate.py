"""Temperature scaling of a trained prior: one scalar that multiplies its logits, fitted on held-out grids.

A prior trained for many passes over a few tens of thousands of grids memorises them, and its
predictions on new grids are overconfident: the held-out NLL falls when the logits are scaled down.
The scale s minimises the mean NLL of held-out codes, f(s) = mean_t [logsumexp(s z_t) - s z_t[x_t]],
where z_t are the prior's raw logits (K,) at position t and x_t the true code. f is convex in s
(its second derivative is the variance of z_t under softmax(s z_t)), so Newton's method from s = 1
finds the one minimum in a few steps.

Fitting one number on thousands of grids hardly overfits them; still, quote the NLL of data that was
not used for the fit (``vqkit prior eval --data ...``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vqkit.priors.build import Prior
from vqkit.priors.data import CodeSet
from vqkit.priors.evaluate import grid_batches

SCALE_RANGE = (1.0 / 16.0, 16.0)  # a fitted scale outside this says the prior is broken, not miscalibrated


@dataclass(frozen=True)
class Calibration:
    """The fitted ``logit_scale`` (1 / temperature) and the mean NLL (bits per code) of the fitting
    grids with the raw logits and with the scaled ones."""

    logit_scale: float
    num_grids: int
    bits_per_code_raw: float
    bits_per_code_calibrated: float


def _objective(chunks: list[tuple[Tensor, Tensor]], s: float) -> tuple[float, float, float]:
    """Mean over positions of f(s) (nats), f'(s) and f''(s); chunks hold raw logits (n, K) float32 and
    the true codes (n,) int64. Summed in float64: the derivatives near the minimum are small."""
    total = grad = curv = 0.0
    count = 0
    for z32, target in chunks:
        z = z32.double()
        logp = torch.log_softmax(s * z, dim=-1)
        p = logp.exp()
        z_true = z.gather(1, target[:, None])[:, 0]
        mean_z = (p * z).sum(dim=1)
        total += float(-(logp.gather(1, target[:, None])[:, 0]).sum())
        grad += float((mean_z - z_true).sum())
        curv += float(((p * z * z).sum(dim=1) - mean_z**2).sum())
        count += len(target)
    return total / count, grad / count, curv / count


@torch.no_grad()
def _raw_logits(prior: Prior, codes: CodeSet, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    """(logits (n, K) float32, codes (n,)) per batch, with the prior's scale held at 1 and its labels
    used where both the prior and the data have them (as `evaluate_prior` scores them)."""
    k = prior.config.codebook_size
    saved = prior.logit_scale.clone()
    was_training = prior.training
    prior.eval()
    prior.logit_scale.fill_(1.0)
    chunks: list[tuple[Tensor, Tensor]] = []
    try:
        for idx, labels in grid_batches(prior, codes, batch_size=batch_size):
            logits = prior.logits(idx, labels).float().reshape(-1, k).cpu()
            chunks.append((logits, idx.reshape(-1).cpu()))
    finally:
        prior.logit_scale.copy_(saved)
        prior.train(was_training)
    return chunks


def calibrate(prior: Prior, codes: CodeSet, *, max_grids: int = 2000, batch_size: int = 256) -> Calibration:
    """Fit ``prior.logit_scale`` on (at most ``max_grids``, evenly spaced, of) ``codes`` and set it in place.

    ``codes`` should be grids the prior was not trained on. The raw logits of max_grids grids are held
    in memory (max_grids * h * w * K floats: 2000 8x8 grids at K=512 take 262 MB). The scale never
    makes the fitting NLL worse than the raw logits: if Newton's method fails to improve on s = 1,
    s = 1 is kept."""
    if len(codes) == 0:
        raise ValueError("calibration needs at least one grid")
    if codes.grid != prior.config.grid:
        raise ValueError(f"grids are {codes.grid}; the prior models {prior.config.grid}")
    if max_grids < 1:
        raise ValueError(f"max_grids must be >= 1, got {max_grids}")
    subset = codes.spread(max_grids)  # evenly over the set: it may be ordered by source
    chunks = _raw_logits(prior, subset, batch_size)
    raw, grad, curv = _objective(chunks, 1.0)
    s, scaled, steps = 1.0, raw, 0
    lo, hi = SCALE_RANGE
    # curv == 0: all logits equal (an untrained prior), every scale gives the same NLL: keep 1.
    while curv > 0.0 and steps < 50:
        steps += 1
        s_next = min(max(s - grad / curv, lo), hi)
        converged = abs(s_next - s) < 1e-7 * s
        s = s_next
        scaled, grad, curv = _objective(chunks, s)
        if converged:
            break
    if not scaled <= raw:  # guard: the fit may only improve on the raw logits
        s, scaled = 1.0, raw
    prior.logit_scale.fill_(s)
    return Calibration(
        logit_scale=s,
        num_grids=len(subset),
        bits_per_code_raw=raw / math.log(2.0),
        bits_per_code_calibrated=scaled / math.log(2.0),
    )
