"""Finite scalar quantization (FSQ; Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made
Simple", sec. 3): a fixed grid instead of a learned codebook.

z (B, D, h, w) is projected by a learned 1x1 map to d = len(levels) channels; channel i is bounded by
a tanh so that rounding gives exactly ``levels[i]`` = L_i integer values, rounded with a
straight-through gradient, scaled back into [-1, 1] and projected back to D. The code of a position is
the mixed-radix number of its d digits (digit i in [0, L_i), dimension 0 the least significant), so
the implicit codebook has K = prod(levels) codes, all of them reachable. There is no codebook to
learn: no loss terms, no EMA, no restarts.

Units: "level units" are the integers rounding produces, in [-(L_i // 2), L_i - 1 - L_i // 2]; the
code space is level units divided by L_i // 2 (in [-1, 1]), where ``candidates`` measures distance.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from vqkit.config import QuantizerConfig
from vqkit.quantizers.base import Quantizer, QuantizerOutput

# Margin (in level units) by which the bounded range overshoots the outermost levels, so each of
# them owns a rounding interval of positive width but rounding never leaves the grid.
BOUND_MARGIN = 1e-3


def rank_tuples(k: int, sizes: tuple[int, ...]) -> torch.Tensor:
    """Per-dimension rank tuples (T, d) that can hold the k nearest grid points, ordered by rank sum
    then lexicographically.

    Rank j_i is a grid point's place along dimension i when that dimension's levels are sorted by
    distance. A point with ranks j is no nearer than the prod(j_i + 1) - 1 other points whose ranks
    are all <= j's, and comes after them in ``candidates``' order (ties go to the smaller rank sum),
    so each of the k nearest has prod(j_i + 1) <= k: these tuples (at most K) are the only ones to
    measure."""
    found: list[tuple[int, ...]] = []

    def extend(prefix: tuple[int, ...], budget: int) -> None:
        if len(prefix) == len(sizes):
            found.append(prefix)
            return
        for j in range(min(sizes[len(prefix)], budget)):
            extend((*prefix, j), budget // (j + 1))

    extend((), k)
    found.sort(key=lambda t: (sum(t), t))
    return torch.tensor(found, dtype=torch.long).view(-1, len(sizes))


class FiniteScalarQuantizer(Quantizer):
    """Round each of d bounded scalars to one of ``levels[i]`` values (FSQ, sec. 3.1)."""

    discrete: ClassVar[bool] = True

    levels: torch.Tensor  # (d,) int64, L_i
    basis: torch.Tensor  # (d,) int64, prod(L_0 .. L_{i-1}): the mixed-radix place values
    half_width: torch.Tensor  # (d,) float32, L_i // 2: level units per unit of the code space
    restarts_total: torch.Tensor  # () always 0: a fixed grid has nothing to restart

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.dim = len(cfg.levels)
        levels = torch.tensor(cfg.levels, dtype=torch.long)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), 0)
        # All derived from the config: not saved, so the weights hold only the two projections.
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("half_width", (levels // 2).float(), persistent=False)
        self.register_buffer("restarts_total", torch.zeros((), dtype=torch.long), persistent=False)
        self.project_in = nn.Conv2d(cfg.code_dim, self.dim, 1)  # D -> d
        self.project_out = nn.Conv2d(self.dim, cfg.code_dim, 1)  # d -> D

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    # ------------------------------------------------------------------------------------- the grid

    def _channels(self, t: torch.Tensor) -> torch.Tensor:
        """A (d,) tensor shaped (1, d, 1, 1) to broadcast over (B, d, h, w)."""
        return t.view(1, self.dim, 1, 1)

    def _bounded(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> (B, d, h, w) float32 in level units, before rounding (FSQ sec. 3.1).

        tanh(x) * half_l - offset spans (-(L // 2) - margin, L - 1 - L // 2 + margin): an odd L is
        symmetric about level 0 (offset 0); an even L has one level more below zero than above, so
        its range moves down by half a level (offset 0.5) and x = 0 falls half-way between the two
        middle levels. The paper also shifts x by tan(offset / half_l) to put x = 0 on level 0; for
        L = 2 that parks x = 0 on one level where tanh is nearly flat (slope ~0.004), so the other
        level starves. Without the shift every L keeps its levels symmetric about x = 0."""
        x = self.project_in(z.float())  # (B, d, h, w)
        levels = self._channels(self.levels).float()
        half_l = (levels - 1) / 2 + BOUND_MARGIN
        offset = (1 - levels.remainder(2)) * 0.5  # 0.5 for an even L, 0 for an odd one
        return torch.tanh(x) * half_l - offset

    def _indices_of(self, rounded: torch.Tensor) -> torch.Tensor:
        """Rounded level units (B, d, h, w) -> indices (B, h, w): digits rounded + L//2 in [0, L)."""
        digits = rounded.long() + self._channels(self.levels // 2)
        return (digits * self._channels(self.basis)).sum(1)

    def scaled_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) -> the grid points in the code space (B, d, h, w), float32 in [-1, 1]."""
        idx = indices.unsqueeze(1)  # (B, 1, h, w)
        digits = idx.div(self._channels(self.basis), rounding_mode="floor") % self._channels(self.levels)
        level = digits - self._channels(self.levels // 2)
        return level.float() / self._channels(self.half_width)

    @torch.no_grad()
    def code_space(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> the bounded point in the code space (B, d, h, w) that rounding
        quantizes; ``candidates`` orders codes by their distance to it."""
        with torch.autocast(z.device.type, enabled=False):
            return self._bounded(z) / self._channels(self.half_width)

    # ---------------------------------------------------------------------------------------- API

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> indices (B, h, w) int64."""
        with torch.autocast(z.device.type, enabled=False):
            return self._indices_of(self._bounded(z).round())

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) -> quantized (B, D, h, w) float32, exactly what ``forward`` returns."""
        with torch.autocast(indices.device.type, enabled=False):
            return self.project_out(self.scaled_codes(indices))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        # float32 even under autocast: bf16 carries 8 significant bits, too few to round a bounded
        # value next to a level boundary the same way encode() and the codec do.
        with torch.autocast(z.device.type, enabled=False):
            bounded = self._bounded(z)  # (B, d, h, w), level units
            indices = self._indices_of(bounded.round())
            # Straight-through (FSQ sec. 3.1): the value is the grid point exactly (x - x is exactly
            # 0), the gradient that of the bounded scalars, so quantized equals indices_to_codes.
            scaled = bounded / self._channels(self.half_width)
            codes = self.scaled_codes(indices) + (scaled - scaled.detach())
            return QuantizerOutput(quantized=self.project_out(codes), indices=indices)

    @torch.no_grad()
    def candidates(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """z (B, D, h, w) -> (B, h, w, k) int64: the k grid points nearest to the bounded z in the
        code space, nearest first; entry 0 is exactly ``encode``'s choice.

        Ties are broken deterministically: by the sum of the per-dimension ranks (so a point never
        comes after one it is nowhere nearer than), then lexicographically by those ranks."""
        if not 1 <= k <= self.codebook_size:
            raise ValueError(f"candidates must be between 1 and K = {self.codebook_size}, got {k}")
        b, _, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False):
            bounded = self._bounded(z).permute(0, 2, 3, 1).reshape(-1, self.dim, 1)  # (N, d, 1)
        sizes = tuple(int(n) for n in self.levels)
        levels, half = self.levels.view(1, -1, 1), (self.levels // 2).view(1, -1, 1)
        rounded = bounded.round().long() + half  # (N, d, 1): encode()'s digits
        # A dimension's k nearest levels lie within k - 1 levels of the rounded one: a window of
        # 2k - 1 digits from there bounds the work by k, not by L.
        width = min(max(sizes), 2 * k - 1)
        start = (rounded - (k - 1)).clamp(min=0)
        digits = start + torch.arange(width, device=z.device)  # (N, d, W)
        # Per-dimension squared distances in the code space (N, d, W); digits past L are infinitely far.
        dist = ((bounded - (digits - half).float()) / self.half_width.view(1, -1, 1)).pow(2)
        dist = dist.masked_fill(digits >= levels, float("inf"))
        # Rank 0 of every dimension is the rounded level (a half-way tie goes where round() sends
        # it), so the all-zero rank tuple is encode()'s code.
        key = dist.masked_fill(digits == rounded, -1.0)
        order = key.sort(dim=2, stable=True).indices  # (N, d, W): nearest first
        near_dist, near_digit = dist.gather(2, order), digits.gather(2, order)
        tuples = rank_tuples(k, sizes).to(z.device)  # (T, d)
        total = torch.zeros(bounded.shape[0], tuples.shape[0], device=z.device)  # (N, T)
        index = torch.zeros(bounded.shape[0], tuples.shape[0], dtype=torch.long, device=z.device)
        for i in range(self.dim):  # summed in one fixed order: a dominated tuple is never larger
            total += near_dist[:, i, tuples[:, i]]
            index += near_digit[:, i, tuples[:, i]] * self.basis[i]
        # Stable: equal distances keep the tuples' order (rank sum, then lexicographic).
        pick = total.sort(dim=1, stable=True).indices[:, :k]
        return index.gather(1, pick).view(b, h, w, k)
