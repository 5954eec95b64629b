"""The quantizer contract shared by every quantizer in vqkit.

A quantizer maps the encoder output z (B, D, h, w) to ``quantized`` (B, D, h, w), what the decoder
sees. It says by ``discrete`` whether it has discrete codes:

- ``discrete`` True (``VectorQuantizer``): every position gets one of ``codebook_size`` = K codes.
  ``indices`` are (B, h, w) int64 in [0, K); ``encode``, ``candidates`` and ``indices_to_codes`` work,
  and ``indices_to_codes(encode(z))`` is what ``forward(z).quantized`` is in eval mode.
- ``stages`` S > 1 (``ResidualVQ``, kind rvq): every position gets S codes, one per stage, each of
  K = ``codebook_size``; ``indices`` are (B, S, h, w) int64, stage by stage (``encode`` alike), and
  ``indices_to_codes`` takes any prefix (B, s, h, w), 1 <= s <= S, returning the sum of the first s
  stages' vectors: a prefix decodes to a coarser picture. ``candidates`` raises (the codec's code
  search is for single-stage kinds). Every other kind has ``stages`` 1 and the shapes above; code
  that takes indices asks ``stages``, never the tensor's ndim.
- ``discrete`` False (``IdentityQuantizer``, a plain autoencoder): no codes. ``codebook_size`` is None;
  ``forward`` passes z on with no loss terms, and its ``indices`` keep their (B, h, w) int64 shape
  but hold NO_CODE (-1) everywhere; ``encode``, ``candidates`` and ``indices_to_codes`` raise
  NoCodesError. Code that needs codes asks ``discrete`` first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

NO_CODE = -1  # every index of a quantizer without discrete codes


class NoCodesError(RuntimeError):
    """Codes were asked of a quantizer without discrete codes (a plain autoencoder)."""


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, D, h, w), straight-through in training: gradients reach z
    # (B, h, w) int64, or (B, S, h, w) when the quantizer has S > 1 stages; NO_CODE everywhere when
    # the quantizer is not discrete
    indices: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # scalar terms, already weighted


class Quantizer(nn.Module):
    """The interface of every quantizer (see the module docstring for what ``discrete`` means)."""

    discrete: ClassVar[bool]
    restarts_total: torch.Tensor  # () codes restarted so far (codebook health); 0 where none are

    @property
    def codebook_size(self) -> int | None:
        """K, the number of codes; None when the quantizer is not discrete."""
        raise NotImplementedError

    @property
    def stages(self) -> int:
        """S, codes per position: 1 for every kind but residual VQ."""
        return 1

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """The training and evaluation pass: z (B, D, h, w) -> quantized, indices, loss terms.
        Quantization math runs in float32 even under autocast (bf16 rounds distances and margins
        enough to pick other codes than encode() and the codec): subclasses implement
        ``_forward`` on float32 latents."""
        with torch.autocast(z.device.type, enabled=False):
            return self._forward(z.float())

    def _forward(self, z: torch.Tensor) -> QuantizerOutput:
        raise NotImplementedError

    @torch.no_grad()
    def frozen(self, z: torch.Tensor) -> QuantizerOutput:
        """What the codec decodes for z, in any mode: no straight-through, no state updated, no loss
        terms (decoder fine-tuning, ``VQVAE.forward(frozen_codes=True)``): the codes of
        ``encode`` and their vectors."""
        idx = self.encode(z)
        with torch.autocast(z.device.type, enabled=False):
            return QuantizerOutput(quantized=self.indices_to_codes(idx), indices=idx)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> indices (B, h, w) int64 ((B, S, h, w) with S > 1 stages)."""
        raise NotImplementedError

    def candidates(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """z (B, D, h, w) -> (B, h, w, k) int64: the k nearest codes per position, nearest first."""
        raise NotImplementedError

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) -> quantized (B, D, h, w); with S > 1 stages (B, s, h, w), any
        1 <= s <= S, -> the sum of the first s stages' vectors."""
        raise NotImplementedError
