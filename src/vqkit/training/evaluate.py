"""Evaluation of a model over a whole image set: quality and codebook health in one pass."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vqkit.data import iter_batches, to_float, to_uint8_hwc
from vqkit.data.corruptions import Corruption
from vqkit.metrics import CodebookUsage, nominal_bpp, psnr_per_image, ssim_per_image
from vqkit.models import VQVAE

PSNR_CAP = 100.0  # identical images have infinite PSNR; cap so the mean stays finite


@torch.no_grad()
def evaluate(
    model: VQVAE,
    images: list[np.ndarray],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    with_ssim: bool = True,
    corruption: Corruption | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Reconstruct every image (H, W, C uint8) and report psnr, ssim, mse (on 0-255 values),
    codebook_usage, perplexity, dead_codes, bpp_nominal and num_images. With ``corruption`` the
    model sees corrupted images (seeded per batch) and is scored against the clean ones.

    A residual quantizer of S > 1 stages adds ``stages`` and ``per_stage`` (usage, perplexity, dead
    codes and code entropy of each stage's codebook); its codebook_usage, perplexity and dead_codes
    are then the means over the stages, code_entropy_bits their sum (bits per position when each
    stage is coded on its own), and bpp_nominal counts S log2 K bits per position."""
    if not images:
        raise ValueError("evaluate() needs at least one image")
    was_training = model.training
    model.eval()
    device = torch.device(device)
    stages = model.quantizer.stages
    usages = [CodebookUsage(model.codebook_size) for _ in range(stages)]
    psnrs: list[np.ndarray] = []
    ssims: list[np.ndarray] = []
    sq_err, n_values = 0.0, 0
    bits, pixels = 0.0, 0
    try:
        for i, batch in enumerate(iter_batches(images, batch_size)):
            x = to_float(torch.from_numpy(np.stack(batch))).to(device)
            h, w = x.shape[-2:]
            x_in = corruption(x, torch.Generator().manual_seed(seed + i)) if corruption else x
            z = model.encode_latents(x_in)
            q = model.quantize(z)
            recon = model.decode(q.quantized).clamp(0, 1)[..., :h, :w]
            if model.quantizer.discrete:
                per_stage = [q.indices] if stages == 1 else q.indices.unbind(1)  # (B, h, w) each
                for usage, grid_codes in zip(usages, per_stage, strict=True):
                    usage.update(grid_codes)
                grid = (q.indices.shape[-2], q.indices.shape[-1])
                bits += stages * nominal_bpp(model.codebook_size, grid, (h, w)) * h * w * len(batch)
            pixels += h * w * len(batch)
            psnrs.append(psnr_per_image(x, recon).clamp(max=PSNR_CAP).cpu().numpy())
            out8 = to_uint8_hwc(recon.cpu())
            ref8 = np.stack(batch)
            diff = out8.astype(np.float64) - ref8.astype(np.float64)
            sq_err += float((diff**2).sum())
            n_values += diff.size
            if with_ssim:
                ssims.append(ssim_per_image(ref8, out8))
    finally:
        model.train(was_training)
    result: dict[str, Any] = {
        "num_images": len(images),
        "psnr": float(np.concatenate(psnrs).mean()),
        "mse": sq_err / n_values,
    }
    if with_ssim:
        result["ssim"] = float(np.concatenate(ssims).mean())
    if model.quantizer.discrete:
        health = [codebook_health(u) for u in usages]
        if stages == 1:
            result.update(health[0])
        else:
            result.update(
                codebook_usage=float(np.mean([h["codebook_usage"] for h in health])),
                perplexity=float(np.mean([h["perplexity"] for h in health])),
                dead_codes=float(np.mean([h["dead_codes"] for h in health])),
                code_entropy_bits=float(sum(h["code_entropy_bits"] for h in health)),
                stages=stages,
                per_stage=[{"stage": i + 1, **h} for i, h in enumerate(health)],
            )
        result.update(bpp_nominal=bits / pixels, codebook_size=model.codebook_size)
    return result


def codebook_health(usage: CodebookUsage) -> dict[str, Any]:
    """Usage, perplexity, dead codes and code entropy (bits) of one codebook's counts."""
    return {
        "codebook_usage": usage.usage,
        "perplexity": usage.perplexity,
        "dead_codes": usage.dead_codes,
        "code_entropy_bits": usage.entropy_bits,
    }
