"""Likelihood of code grids under a prior, against the simple baselines it must beat."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vqkit.data import DataError
from vqkit.priors.build import Prior
from vqkit.priors.data import CodeSet


def check_codes(prior: Prior, codes: CodeSet, name: str) -> None:
    """DataError unless the prior can score ``codes`` (named ``name`` in the message): same grid shape,
    and no label beyond the prior's classes."""
    if codes.grid != prior.config.grid:
        raise DataError(f"{name} encodes to {codes.grid} grids; the prior models {prior.config.grid}")
    if codes.labels is not None and prior.config.num_classes and codes.num_classes > prior.config.num_classes:
        raise DataError(f"{name} has {codes.num_classes} classes; the prior knows {prior.config.num_classes}")


def grid_batches(
    prior: Prior, codes: CodeSet, *, conditional: bool = True, batch_size: int = 512
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(indices (b, h, w), labels (b,) or None) batches of ``codes`` on the prior's device; labels
    when ``conditional`` and the prior and the data both have them, else None (the "no label" token)."""
    device = prior.head.weight.device
    use_labels = conditional and prior.config.num_classes > 0 and codes.labels is not None
    for start in range(0, len(codes), batch_size):
        idx = torch.from_numpy(codes.indices[start : start + batch_size]).to(device)
        labels = None
        if use_labels:
            assert codes.labels is not None
            labels = torch.from_numpy(codes.labels[start : start + batch_size]).to(device)
        yield idx, labels


@torch.no_grad()
def grid_bits(prior: Prior, codes: CodeSet, *, conditional: bool = True, batch_size: int = 512) -> np.ndarray:
    """(N,) bits per grid under ``prior``, in eval mode (see `grid_batches` for the labels)."""
    was_training = prior.training
    prior.eval()
    out: list[np.ndarray] = []
    try:
        for idx, labels in grid_batches(prior, codes, conditional=conditional, batch_size=batch_size):
            out.append(prior.nll_bits(idx, labels).double().cpu().numpy())
    finally:
        prior.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def unigram_entropy_bits(indices: np.ndarray, codebook_size: int) -> float:
    """Entropy of the code histogram (bits per code): what a prior that ignores context achieves."""
    counts = np.bincount(indices.reshape(-1), minlength=codebook_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def evaluate_prior(prior: Prior, codes: CodeSet, *, batch_size: int = 512) -> dict[str, Any]:
    """NLL in bits per code (and per grid, and the bits per pixel it implies), beside the unigram
    entropy of this data's code histogram and log2(K), the cost of coding every index uniformly."""
    if len(codes) == 0:
        raise ValueError("evaluate_prior needs at least one grid")
    if codes.grid != prior.config.grid:
        raise ValueError(f"grids are {codes.grid}; the prior models {prior.config.grid}")
    k, length = prior.config.codebook_size, prior.config.length
    bits = grid_bits(prior, codes, batch_size=batch_size)
    per_code = float(bits.mean()) / length
    log2k = math.log2(k)
    result: dict[str, Any] = {
        "num_grids": len(codes),
        "grid": list(codes.grid),
        "codebook_size": k,
        "nll_bits_per_code": per_code,
        "nll_bits_per_grid": float(bits.mean()),
        "unigram_entropy_bits_per_code": unigram_entropy_bits(codes.indices, k),
        "log2_codebook_size": log2k,
        "percent_below_log2k": 100.0 * (log2k - per_code) / log2k,
        "conditional": prior.config.num_classes > 0 and codes.labels is not None,
    }
    if result["conditional"]:
        plain = grid_bits(prior, codes, conditional=False, batch_size=batch_size)
        result["nll_bits_per_code_no_label"] = float(plain.mean()) / length
    if codes.image_size is not None:
        pixels = codes.image_size[0] * codes.image_size[1]
        result["image_size"] = list(codes.image_size)
        result["bits_per_pixel"] = float(bits.mean()) / pixels
        result["bits_per_pixel_nominal"] = log2k * length / pixels
    return result
