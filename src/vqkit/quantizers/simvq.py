"""SimVQ: a frozen random codebook seen through one learned linear map (Zhu et al. 2024, "Addressing
Representation Collapse in Vector Quantized Models with One Linear Layer").

The basis C (K, D) is drawn once at construction and never trained (a buffer); the learned map W
(D, D) gives the effective codebook C W (K, D). The codebook loss trains W, which moves every code at
once (the paper's remedy: a gradient on the shared W also reaches codes no encoder output chose),
so the codebook does not collapse onto a few codes without EMA, k-means or restarts.

Shapes: z (B, D, h, w) -> quantized (B, D, h, w), indices (B, h, w); C and C W (K, D).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vqkit import distributed as vdist
from vqkit.config import ConfigError, QuantizerConfig
from vqkit.quantizers.base import Quantizer, QuantizerOutput
from vqkit.quantizers.vq import nearest_code, squared_distances


class SimVQ(Quantizer):
    """Nearest code in C W per position; loss terms ``codebook`` = w_cb * ||sg(z) - C W||^2 (it trains
    W; C is frozen) and ``commitment`` = beta * ||z - sg(C W)||^2; straight-through gradients."""

    discrete: ClassVar[bool] = True

    basis: torch.Tensor  # (K, D) C, frozen
    restarts_total: torch.Tensor  # () always 0: SimVQ restarts nothing

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        if cfg.lookup_dim is not None or cfg.l2_normalize:
            raise ConfigError("quantizer.lookup_dim and quantizer.l2_normalize are options of vq, not simvq")
        self.cfg = cfg
        k, d = cfg.codebook_size, cfg.code_dim
        # C ~ N(0, 1/D): rows of norm about 1, W at nn.Linear's default initialisation, so C W starts
        # at the scale of an untrained encoder's z (norms about 0.5). Codes at the scale of N(0, 1)
        # (norm sqrt(D)) are all far from z, one code wins everywhere and a short CIFAR-10 probe
        # stayed collapsed (usage 0.004 after 200 steps, against 0.3 with this initialisation).
        # C comes from the global RNG, which training seeds (train.seed) before it builds the model,
        # like every other initial weight; it is saved with the weights, since the codes mean nothing
        # without it. Data-parallel training also broadcasts rank 0's copy (``_forward``).
        self.register_buffer("basis", torch.randn(k, d) * d**-0.5)
        self.linear = nn.Linear(d, d, bias=False)
        # Never restarts anything (a zero counter for codebook health); not saved with the weights.
        self.register_buffer("restarts_total", torch.zeros((), dtype=torch.long), persistent=False)
        self._basis_shared = False  # becomes True once rank 0's C has reached every rank

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    @property
    def codebook(self) -> torch.Tensor:
        """The effective codebook C W (K, D) in float32; differentiable w.r.t. W."""
        # nn.Linear computes C @ weight.T: row k of the result is code k mapped by W.
        return F.linear(self.basis.float(), self.linear.weight.float())

    # ---------------------------------------------------------------------------------------- API

    def _flatten(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> (B*h*w, D) in float32."""
        return z.float().permute(0, 2, 3, 1).reshape(-1, self.cfg.code_dim)

    def _unflatten(self, x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """(B*h*w, D) -> (B, D, h, w)."""
        b, _, h, w = shape
        return x.reshape(b, h, w, self.cfg.code_dim).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> indices (B, h, w) int64."""
        with torch.autocast(z.device.type, enabled=False):
            idx = nearest_code(self._flatten(z), self.codebook)
        return idx.view(z.shape[0], z.shape[2], z.shape[3])

    @torch.no_grad()
    def candidates(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """z (B, D, h, w) -> (B, h, w, k) int64: the k nearest codes of C W, nearest first; entry 0 is
        exactly ``encode``'s choice (argmin breaks ties the same way)."""
        if not 1 <= k <= self.codebook_size:
            raise ValueError(f"candidates must be between 1 and K = {self.codebook_size}, got {k}")
        with torch.autocast(z.device.type, enabled=False):
            d = squared_distances(self._flatten(z), self.codebook)  # (B*h*w, K)
        near = d.topk(k, dim=1, largest=False).indices
        near[:, 0] = d.argmin(1)
        return near.view(z.shape[0], z.shape[2], z.shape[3], k)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) -> quantized (B, D, h, w), exactly what ``forward`` returns (eval mode)."""
        b, h, w = indices.shape
        with torch.autocast(indices.device.type, enabled=False):
            e = F.embedding(indices.reshape(-1), self.codebook)  # (B*h*w, D)
        return self._unflatten(e, torch.Size((b, self.cfg.code_dim, h, w)))

    def _forward(self, z: torch.Tensor) -> QuantizerOutput:
        if self.training and not self._basis_shared:
            # Every rank must search the same C W: W is a parameter (DDP keeps it identical), C a
            # buffer DDP does not touch (broadcast_buffers=False), so rank 0's copy goes to all.
            vdist.broadcast(self.basis, src=0)
            self._basis_shared = True
        x = self._flatten(z)  # (N, D)
        codebook = self.codebook  # (K, D), differentiable w.r.t. W
        idx = nearest_code(x.detach(), codebook.detach())  # (N,)
        e = F.embedding(idx, codebook)  # (N, D)
        losses = {
            "codebook": self.cfg.codebook_weight * F.mse_loss(e, x.detach()),  # trains W only
            "commitment": self.cfg.beta * F.mse_loss(x, e.detach()),
        }
        st = x + (e - x).detach()  # straight-through estimator
        indices = idx.view(z.shape[0], z.shape[2], z.shape[3])
        return QuantizerOutput(quantized=self._unflatten(st, z.shape), indices=indices, losses=losses)
