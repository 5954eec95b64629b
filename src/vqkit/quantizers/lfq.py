"""Lookup-free quantization (LFQ; MAGVIT-v2, Yu et al. 2023, sec. 3.1), and what it shares with binary
spherical quantization (vqkit.quantizers.bsq): codes that are sign patterns of b = log2(K) bits.

z (B, D, h, w) is projected by a learned 1x1 map to b dimensions; each dimension's sign is one bit of
the code, and the code's index is its bits read as a binary number, dimension 0 the most significant.
The implicit codebook holds every sign pattern (K = 2**b codes, scaled by ``code_scale``) and is never
stored or searched: the nearest code of a point is its sign pattern. The straight-through code goes back
to D dimensions through a second learned 1x1 map, so ``quantized`` is (B, D, h, w).

Loss terms: ``commitment`` = beta * ||x - sg(c)||^2 (mean over elements; the codes are fixed, so there
is no codebook term) and ``entropy`` = entropy_weight * (E[H(q(x))] - H(E[q(x)])) over soft assignments
q(c | x) ~ exp(-||x - c||^2 / t): confident per-position assignments, and the whole batch spread over
the codebook (MAGVIT-v2's entropy penalty, sec. 3.1). The soft assignment factorises over the bits,
so the per-position entropy is exact from b binary entropies. The codebook (batch) entropy is exact for
K <= 2**12 (from the (N, K) assignment probabilities, computed in chunks that are recomputed for
backward so memory stays at one chunk); above that it is the sum of the b bits' batch entropies, the
factorised approximation used for large codebooks (an upper bound: it ignores dependence between bits).
Under DDP the batch statistics are all-reduced in training, so every rank computes the same entropy
term and the gradients equal one process's over the global batch (``global_means``).

The first training batch sets project_in's scale and offset (``_data_init``), as k-means starts vq.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vqkit import distributed as vdist
from vqkit.config import ConfigError, QuantizerConfig
from vqkit.quantizers.base import Quantizer, QuantizerOutput

EXACT_ENTROPY_MAX_K = 2**12  # exact codebook entropy up to here; factorised over the bits above
ENTROPY_CHUNK = 4096  # positions per chunk of the exact codebook entropy: chunk x K floats at a time
CANDIDATE_CHUNK = 2**22  # flip patterns scored at a time by ``candidates`` (positions x 2**m)


# ------------------------------------------------------------------------------------- bit packing


def bit_values(bits: int, device: torch.device) -> torch.Tensor:
    """(b,) int64 place values, dimension 0 the most significant: 2**(b-1), ..., 2, 1."""
    return 2 ** torch.arange(bits - 1, -1, -1, device=device, dtype=torch.long)


def bits_to_indices(positive: torch.Tensor) -> torch.Tensor:
    """positive (..., b) bool (a dimension's sign is +) -> indices (...,) int64 in [0, 2**b)."""
    return (positive.long() * bit_values(positive.shape[-1], positive.device)).sum(-1)


def indices_to_bits(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """indices (...,) int64 -> (..., b) bool, the inverse of ``bits_to_indices``."""
    return (indices.unsqueeze(-1) & bit_values(bits, indices.device)) != 0


# ----------------------------------------------------------------------------------------- entropy


def binary_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Elementwise entropy in nats of Bernoulli(sigmoid(logits)), stable for large |logits|:
    H = p * softplus(-l) + (1 - p) * softplus(l), since -log p = softplus(-l), -log(1-p) = softplus(l)."""
    p = torch.sigmoid(logits)
    return p * F.softplus(-logits) + (1 - p) * F.softplus(logits)


def global_means(local_sums: torch.Tensor, count: int, collective: bool) -> torch.Tensor:
    """Sums over this rank's positions -> means over the global batch (every rank's positions).

    Under DDP the value is the all-reduced sum (bit-identical on every rank) and the gradient reaches
    this rank's positions multiplied by the world size: DDP then averages gradients over ranks, which
    gives each position the gradient it would get in one process over the global batch. With
    ``collective`` False (evaluation, which runs on one rank alone) the means are local."""
    world = vdist.world_size() if collective else 1
    if world == 1:
        return local_sums / count
    totals = torch.cat([local_sums.detach(), local_sums.new_tensor([float(count)])])
    vdist.all_reduce_sum(totals)
    # Value: exactly the reduced sums (x - x.detach() is exactly 0); gradient: world * d local_sums.
    global_sums = totals[:-1] + world * (local_sums - local_sums.detach())
    return global_sums / totals[-1]


def _code_probability_sums(logits: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """logits (n, b), bits (K, b) float 0/1 -> (K,) sums over the n positions of q(code | position).

    log q(k | n) = sum_j log sigmoid(-l_nj) + sum_j bit_kj * l_nj, since log sigmoid(l) - log sigmoid(-l)
    = l: one matrix product, no (n, K, b) temporary."""
    log_q = F.logsigmoid(-logits).sum(1, keepdim=True) + logits @ bits.t()  # (n, K)
    return log_q.exp().sum(0)


def entropy_terms(logits: torch.Tensor, collective: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (N, b): each bit's log-odds of + under the soft assignment -> (mean per-position entropy,
    codebook entropy of the batch-averaged assignment), both in nats over the global batch.

    Exact codebook entropy for K = 2**b <= EXACT_ENTROPY_MAX_K, else factorised over the bits."""
    n, b = logits.shape
    per_position = binary_entropy(logits).sum()  # () sum over positions; exact, q factorises
    if 2**b <= EXACT_ENTROPY_MAX_K:
        bits = indices_to_bits(torch.arange(2**b, device=logits.device), b).float()  # (K, b)
        # Each chunk's (chunk, K) probabilities are recomputed for backward instead of kept.
        parts = [
            checkpoint(_code_probability_sums, part, bits, use_reentrant=False)
            for part in logits.split(ENTROPY_CHUNK)
        ]
        sums = torch.stack(parts).sum(0)  # (K,)
    else:
        sums = torch.sigmoid(logits).sum(0)  # (b,) expected count of + per bit
    means = global_means(torch.cat([per_position.view(1), sums]), n, collective)
    if 2**b <= EXACT_ENTROPY_MAX_K:
        avg = means[1:].clamp_min(1e-12)  # (K,) the batch-averaged assignment, sums to 1
        codebook = -(avg * avg.log()).sum()
    else:
        p = means[1:].clamp(1e-7, 1 - 1e-7)  # (b,) the batch's share of + per bit
        codebook = -(p * p.log() + (1 - p) * (1 - p).log()).sum()
    return means[0], codebook


# ---------------------------------------------------------------------------------------- candidates


def nearest_flips(margins: torch.Tensor, k: int) -> torch.Tensor:
    """margins (N, b) >= 0, the cost of flipping each bit -> (N, k) int64 XOR masks of the k cheapest
    flip patterns, cheapest first; mask 0 (flip nothing) is always first.

    Flipping the bits of a set S costs the sum of their margins. Bits are ranked by margin (ties: the
    lower dimension first), and patterns of equal cost are ordered by sum over S of 2**rank, so a
    pattern holding the bit of rank r comes after the empty pattern and the r single flips of lower
    rank: the k cheapest use only the m = min(b, k - 1) lowest-ranked bits, and all 2**m patterns of
    those are scored (at most K per position, as a codebook search would)."""
    b = margins.shape[1]
    m = min(b, k - 1)
    ranked = margins.sort(dim=1, stable=True)  # ascending; stable keeps the lower dimension first
    low = ranked.values[:, :m].double()  # (N, m) float64: sums of margins tie only when they truly tie
    patterns = torch.arange(2**m, device=margins.device)  # pattern p flips rank i when bit i of p is set
    member = ((patterns.unsqueeze(1) >> torch.arange(m, device=margins.device)) & 1).to(low.dtype)
    chosen = torch.cat(
        [
            (part @ member.t()).sort(dim=1, stable=True).indices[:, :k]  # (chunk, k) pattern ids
            for part in low.split(max(1, CANDIDATE_CHUNK // 2**m))
        ]
    )
    flips = (chosen.unsqueeze(2) >> torch.arange(m, device=margins.device)) & 1  # (N, k, m)
    place = 2 ** (b - 1 - ranked.indices[:, :m])  # (N, m) place value of the bit of each rank
    return (flips * place.unsqueeze(1)).sum(2)


# ---------------------------------------------------------------------------------------- quantizer


class BinaryCodeQuantizer(Quantizer):
    """What LFQ and BSQ share: a learned projection to b = log2(K) dimensions, a point per position
    (``code_space``), its sign pattern as the code, the index as the bits, the projection back.

    Subclasses say where the point lies (``_points``) and the code's per-dimension magnitude
    (``code_scale``); everything else, losses included, is common."""

    discrete: ClassVar[bool] = True
    # Soft-assignment temperature in units of the squared code magnitude: a bit's log-odds of + are
    # 4 * x_j / (code_scale * temperature), 8 for a point sitting on its code.
    temperature: ClassVar[float] = 0.5
    # The data-dependent start scales each projected dimension to unit variance too (where the scale
    # matters: LFQ's codes are +-1), or only centres it (BSQ normalises: scaling the weights up would
    # only slow the learning of their direction).
    init_scales: ClassVar[bool] = True

    initialized: torch.Tensor  # () bool, False until the first training batch set project_in's scale
    restarts_total: torch.Tensor  # () always 0: the implicit codebook has no codes to restart

    def __init__(self, cfg: QuantizerConfig, code_scale: float) -> None:
        super().__init__()
        if cfg.lookup_dim is not None or cfg.l2_normalize:
            raise ConfigError(
                f"quantizer.lookup_dim and quantizer.l2_normalize are options of vq; {cfg.kind}'s code "
                f"space has log2(codebook_size) dimensions"
            )
        self.cfg = cfg
        self.bits = cfg.codebook_size.bit_length() - 1  # b, with K = 2**b (the config checks)
        self.code_scale = code_scale
        self.project_in = nn.Conv2d(cfg.code_dim, self.bits, 1)
        # No bias at the start: a random one fixes a bit's sign wherever it outweighs W z.
        with torch.no_grad():
            self.project_in.bias.zero_()  # type: ignore[union-attr]
        self.project_out = nn.Conv2d(self.bits, cfg.code_dim, 1)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("restarts_total", torch.zeros((), dtype=torch.long), persistent=False)

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    def _points(self, x: torch.Tensor) -> torch.Tensor:
        """Projected (N, b) -> the points whose signs are the codes (N, b)."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------- code space

    def code_space(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> (B*h*w, b) float32 points in the code space, positions in raster order."""
        with torch.autocast(z.device.type, enabled=False):
            x = self.project_in(z.float()).permute(0, 2, 3, 1).reshape(-1, self.bits)
            return self._points(x)

    def code_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (...) -> (..., b) float32 codes in the code space: +-code_scale per bit."""
        return self.code_scale * (2.0 * indices_to_bits(indices, self.bits).float() - 1.0)

    def _unflatten(self, codes: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """(B*h*w, b) -> (B, D, h, w) through the output projection."""
        b, h, w = shape
        return self.project_out(codes.reshape(b, h, w, self.bits).permute(0, 3, 1, 2).contiguous())

    # ----------------------------------------------------------------------------------------- API

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> indices (B, h, w) int64: the sign pattern (0 counts as -)."""
        return bits_to_indices(self.code_space(z) > 0).view(z.shape[0], z.shape[2], z.shape[3])

    @torch.no_grad()
    def candidates(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """z (B, D, h, w) -> (B, h, w, k) int64: the k codes nearest to each point, nearest first.
        Flipping bit j moves the squared distance up by 4 * code_scale * |x_j|, so the k nearest are
        the k cheapest flip patterns of ``nearest_flips``; entry 0 is ``encode``'s code."""
        if not 1 <= k <= self.codebook_size:
            raise ValueError(f"candidates must be between 1 and K = {self.codebook_size}, got {k}")
        x = self.code_space(z)
        near = bits_to_indices(x > 0).unsqueeze(1) ^ nearest_flips(x.abs(), k)  # (B*h*w, k)
        return near.view(z.shape[0], z.shape[2], z.shape[3], k)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) -> quantized (B, D, h, w), exactly what ``forward`` returns (eval mode)."""
        with torch.autocast(indices.device.type, enabled=False):
            b, h, w = indices.shape
            return self._unflatten(self.code_vectors(indices.reshape(-1)), (b, h, w))

    def _forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, _, h, w = z.shape
        if self.training and not bool(self.initialized):
            self._data_init(z)
        x = self.code_space(z)  # (N, b)
        positive = x > 0
        codes = self.code_scale * (2.0 * positive.float() - 1.0)  # (N, b), constant: no gradient
        losses = {"commitment": self.cfg.beta * F.mse_loss(x, codes)}
        if self.cfg.entropy_weight > 0:
            logits = 4.0 * x / (self.code_scale * self.temperature)  # log-odds of + per bit
            # Statistics over every rank's positions in training only: evaluation runs on one rank.
            per_position, codebook = entropy_terms(logits, collective=self.training)
            losses["entropy"] = self.cfg.entropy_weight * (per_position - codebook)
        # Straight-through: the value is exactly the code (x - x.detach() is 0), the gradient reaches x.
        st = codes + (x - x.detach())
        return QuantizerOutput(
            quantized=self._unflatten(st, (b, h, w)),
            indices=bits_to_indices(positive).view(b, h, w),
            losses=losses,
        )

    @torch.no_grad()
    def _data_init(self, z: torch.Tensor) -> None:
        """Data-dependent initialisation on the first global training batch (as k-means starts vq):
        each projected dimension is centred over the batch, so every bit splits the batch about in half
        from step 0, and with ``init_scales`` scaled to unit variance. The encoder's first outputs share
        a large common component, which otherwise gives every position the same sign pattern, locked
        in by the commitment and per-position entropy terms before the codebook term can spread it.
        The moments are all-reduced, so every rank makes the same change."""
        x = self.project_in(z).permute(0, 2, 3, 1).reshape(-1, self.bits)  # (N, b) before _points
        moments = torch.cat([x.sum(0), x.pow(2).sum(0), x.new_tensor([float(x.shape[0])])])
        vdist.all_reduce_sum(moments)
        n = moments[-1]
        mean = moments[: self.bits] / n
        std = (moments[self.bits : 2 * self.bits] / n - mean.pow(2)).clamp_min(1e-12).sqrt()
        if not self.init_scales:
            std = torch.ones_like(std)
        weight, bias = self.project_in.weight, self.project_in.bias
        assert bias is not None
        weight.div_(std.view(-1, 1, 1, 1))
        bias.sub_(mean).div_(std)
        self.initialized.fill_(True)


class LookupFreeQuantizer(BinaryCodeQuantizer):
    """LFQ: the code of a position is the sign of each projected dimension, as -1 or +1."""

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__(cfg, code_scale=1.0)

    def _points(self, x: torch.Tensor) -> torch.Tensor:
        return x
