"""Binary spherical quantization (BSQ; Zhao et al. 2024, sec. 3.2).

z (B, D, h, w) is projected by a learned 1x1 map to b = log2(K) dimensions and l2-normalised onto the
unit sphere, u = x / ||x||; the code is the sign pattern scaled onto the sphere, c = sign(u) / sqrt(b),
so every code has norm 1 and the quantization error ||u - c|| is bounded (BSQ sec. 3.2). Indices,
candidates, the straight-through estimator and the loss terms (commitment beta * ||u - sg(c)||^2 and
the entropy term of soft assignments, factorised over the bits, BSQ sec. 3.3) are LFQ's
(vqkit.quantizers.lfq), with the points on the sphere.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from vqkit.config import QuantizerConfig
from vqkit.quantizers.lfq import BinaryCodeQuantizer


class BinarySphericalQuantizer(BinaryCodeQuantizer):
    """BSQ: the code of a position is the sign pattern of its unit vector, +-1/sqrt(b) per dimension."""

    init_scales: ClassVar[bool] = False  # the first batch centres the projection; its scale is moot

    def __init__(self, cfg: QuantizerConfig) -> None:
        bits = cfg.codebook_size.bit_length() - 1
        super().__init__(cfg, code_scale=1.0 / math.sqrt(bits))

    def _points(self, x: torch.Tensor) -> torch.Tensor:
        # (N, b) onto the unit sphere; a zero vector stays 0 (every bit -), as its signs say.
        return F.normalize(x, dim=1)
