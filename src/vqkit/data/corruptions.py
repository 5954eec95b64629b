"""Image corruptions for denoising training and evaluation.

A corruption spec is ``KIND:ARGS``; several join with ``+`` and apply in order:
  gaussian:SIGMA          additive white Gaussian noise, SIGMA on the 0-255 scale
  gaussian:LO-HI          SIGMA drawn uniformly per image from [LO, HI] (blind denoising)
  saltpepper:P            a fraction P of pixels set to 0 or 255 (half each)
  jpeg:Q                  JPEG round trip at quality Q (or LO-HI) through Pillow
  mask:P                  a fraction P of pixels set to 0 in all channels (random masking)
Every corruption takes (B, C, H, W) floats in [0, 1] and a torch.Generator, so a batch's corruption
is reproducible from its seed (resume stays exact). Outputs are clamped to [0, 1].
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from vqkit.data.errors import DataError

CorruptFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _range(text: str, name: str) -> tuple[float, float]:
    try:
        parts = [float(p) for p in text.split("-")] if text else []
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or any(p < 0 for p in parts):
        raise DataError(f"corruption {name}: expected a number or LO-HI, got {text!r}")
    return (parts[0], parts[-1])


def _uniform(lo: float, hi: float, n: int, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def gaussian(lo: float, hi: float) -> CorruptFn:
    def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        sigma = _uniform(lo, hi, len(x), g).view(-1, 1, 1, 1) / 255.0
        noise = torch.randn(x.shape, generator=g).to(x.device)
        return (x + sigma.to(x.device) * noise).clamp(0, 1)

    return apply


def salt_pepper(lo: float, hi: float) -> CorruptFn:
    def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        p = _uniform(lo, hi, b, g).view(-1, 1, 1, 1)
        u = torch.rand(b, 1, h, w, generator=g)
        salt = (u < p / 2).to(x.device)
        pepper = ((u >= p / 2) & (u < p)).to(x.device)
        return torch.where(salt, 1.0, torch.where(pepper, 0.0, x))

    return apply


def mask(lo: float, hi: float) -> CorruptFn:
    def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        p = _uniform(lo, hi, b, g).view(-1, 1, 1, 1)
        return torch.where((torch.rand(b, 1, h, w, generator=g) < p).to(x.device), 0.0, x)

    return apply


def jpeg(lo: float, hi: float) -> CorruptFn:
    def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        qualities = _uniform(lo, hi, len(x), g).round().int().tolist()
        arr = (x.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(arr)
        for i, (im, q) in enumerate(zip(arr, qualities, strict=True)):
            buf = io.BytesIO()
            Image.fromarray(im.squeeze(2) if im.shape[2] == 1 else im).save(
                buf, format="JPEG", quality=int(min(max(q, 1), 100))
            )
            dec = np.asarray(Image.open(buf))
            out[i] = dec.reshape(im.shape)
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div(255).to(x.device)

    return apply


_KINDS: dict[str, Callable[[float, float], CorruptFn]] = {
    "gaussian": gaussian,
    "saltpepper": salt_pepper,
    "jpeg": jpeg,
    "mask": mask,
}


@dataclass(frozen=True)
class Corruption:
    spec: str
    steps: tuple[CorruptFn, ...]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in self.steps:
            x = step(x, generator)
        return x


def parse_corruption(spec: str) -> Corruption:
    """``"gaussian:25"``, ``"gaussian:5-50+jpeg:30-90"`` ... -> a Corruption; DataError if malformed."""
    steps = []
    for part in spec.split("+"):
        kind, _, args = part.strip().partition(":")
        if kind not in _KINDS:
            raise DataError(f"unknown corruption {kind!r}; choose from {', '.join(_KINDS)}")
        lo, hi = _range(args, kind)
        if kind in ("saltpepper", "mask") and hi > 1:
            raise DataError(f"corruption {kind}: the fraction must be <= 1, got {hi}")
        steps.append(_KINDS[kind](lo, hi))
    return Corruption(spec, tuple(steps))
