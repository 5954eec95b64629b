"""Residual vector quantization: S vq codebooks in turn, each quantizing what the earlier stages left
(SoundStream, Zeghidour et al. 2021, sec. 3.2; "RVQ" in EnCodec and vector-quantize-pytorch).

Stage 1 quantizes z, stage s the residual r_s = z - (e_1 + ... + e_{s-1}); the decoder sees the sum of
the stages' vectors. Each stage is vqkit's own VectorQuantizer (EMA, k-means initialisation on its
residuals, dead-code restarts, lookup_dim / l2_normalize), with K = ``codebook_size`` codes.

Quantizer dropout (SoundStream sec. 3.3), per sample and in training only: a share ``stage_dropout``
of the samples keeps a random prefix of n ~ Uniform{1..S} stages, the rest all S. A sample's
``quantized`` is the sum of its first n stages, so the decoder learns to decode every prefix, and the
codec can code 1..S stages of one model (one model, several rates). Stages past a sample's prefix
learn nothing from it: neither their EMA, usage windows, restarts, k-means nor loss terms see it
(its ``indices`` there still hold the codes its residual gets, which no vector and no statistic uses).

Shapes: z (B, D, h, w) -> quantized (B, D, h, w), indices (B, S, h, w); a prefix (B, s, h, w) of the
indices decodes (``indices_to_codes``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from vqkit.config import QuantizerConfig
from vqkit.quantizers.base import Quantizer, QuantizerOutput
from vqkit.quantizers.vq import VectorQuantizer


class ResidualVQ(Quantizer):
    """S VectorQuantizers on successive residuals; see the module docstring.

    Gradients: each stage's output is straight-through to its residual, and the residual handed on is
    r_s - sg(e_s), as in vector-quantize-pytorch's ResidualVQ; so z receives the output gradient once
    per stage its sample uses. Loss terms (``commitment``, and ``codebook`` without EMA) are the
    stages' terms summed, each a mean over the samples that use the stage."""

    discrete: ClassVar[bool] = True

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        stage = dataclasses.replace(cfg, kind="vq", stages=1)
        self.layers = nn.ModuleList(VectorQuantizer(stage) for _ in range(cfg.stages))

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    @property
    def stages(self) -> int:
        return self.cfg.stages

    @property
    def restarts_total(self) -> torch.Tensor:  # type: ignore[override]
        """() codes restarted so far, over all stages."""
        return torch.stack([layer.restarts_total for layer in self._stages()]).sum()

    def _stages(self) -> list[VectorQuantizer]:
        return [layer for layer in self.layers if isinstance(layer, VectorQuantizer)]

    # ---------------------------------------------------------------------------------------- API

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> indices (B, S, h, w) int64: each stage's nearest code to its residual."""
        with torch.autocast(z.device.type, enabled=False):
            residual = z.float()
            out = []
            for layer in self._stages():
                idx = layer.encode(residual)  # (B, h, w)
                residual = residual - layer.indices_to_codes(idx)
                out.append(idx)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def frozen(self, z: torch.Tensor) -> QuantizerOutput:
        """The codec's codes and vectors, no state updated (decoder fine-tuning). In training mode
        quantizer dropout still applies to the vectors: a sample keeps the sum of its prefix, so a
        fine-tuned decoder keeps decoding every prefix. ``indices`` are all S stages."""
        idx = self.encode(z)  # (B, S, h, w)
        keep_n = self.prefix_lengths(z.shape[0], z.device)
        with torch.autocast(z.device.type, enabled=False):
            layers = self._stages()
            quantized = torch.zeros_like(z, dtype=torch.float32)
            for s, layer in enumerate(layers):
                keep = (keep_n > s).view(-1, 1, 1, 1).float()
                quantized = quantized + layer.indices_to_codes(idx[:, s]) * keep
        return QuantizerOutput(quantized=quantized, indices=idx)

    def candidates(self, z: torch.Tensor, k: int) -> torch.Tensor:
        raise NotImplementedError(
            "the code search (candidates) is for single-stage quantizers, not residual VQ"
        )

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, s, h, w), 1 <= s <= S -> (B, D, h, w), the sum of the first s stages' vectors
        (exactly what ``forward`` returns in eval mode when s = S)."""
        if indices.ndim != 4 or not 1 <= indices.shape[1] <= self.stages:
            raise ValueError(
                f"residual VQ indices must be (B, s, h, w) with 1 <= s <= {self.stages}, got "
                f"{tuple(indices.shape)}"
            )
        with torch.autocast(indices.device.type, enabled=False):
            layers = self._stages()
            codes = layers[0].indices_to_codes(indices[:, 0])
            for s in range(1, indices.shape[1]):
                codes = codes + layers[s].indices_to_codes(indices[:, s])
        return codes

    @torch.no_grad()
    def stage_vectors(self) -> torch.Tensor:
        """(S, K, D) float32: code k of stage s as the decoder sees it, so that ``indices_to_codes``
        of a prefix is the sum over its stages of these rows (vqkit.models.inference's tables)."""
        k = self.codebook_size
        dev = self._stages()[0].codebook.device
        grid = torch.arange(k, device=dev).view(k, 1, 1)
        with torch.autocast(dev.type, enabled=False):
            return torch.stack([layer.indices_to_codes(grid)[:, :, 0, 0] for layer in self._stages()])

    def prefix_lengths(self, batch: int, device: torch.device) -> torch.Tensor:
        """(B,) int64 stages each sample keeps in a training pass: S, or for a share ``stage_dropout``
        of the samples n ~ Uniform{1..S}. Drawn from the global CPU generator (seeded by training,
        saved with its checkpoints), so a run is reproducible on any device."""
        s = self.stages
        if not self.training or self.cfg.stage_dropout == 0:
            return torch.full((batch,), s, dtype=torch.long, device=device)
        drop = torch.rand(batch) < self.cfg.stage_dropout
        n = torch.where(drop, torch.randint(1, s + 1, (batch,)), torch.full((batch,), s))
        return n.to(device)

    def _forward(self, z: torch.Tensor) -> QuantizerOutput:
        b = z.shape[0]
        keep_n = self.prefix_lengths(b, z.device)  # (B,)
        residual = z
        quantized = torch.zeros_like(z)
        indices: list[torch.Tensor] = []
        losses: dict[str, torch.Tensor] = {}
        for s, layer in enumerate(self._stages()):
            keep = keep_n > s  # (B,) samples that use stage s
            # Every stage runs on every rank even when none of its samples keeps it: the EMA and
            # restart statistics are all-reduced inside, and every rank must take part.
            out = layer.forward_samples(residual, keep if self.training else None)
            quantized = quantized + out.quantized * keep.view(b, 1, 1, 1).to(out.quantized.dtype)
            if self.training:  # the vectors the codes had before this pass's EMA update moved them
                codes = out.quantized.detach()
            else:
                with torch.no_grad():
                    # The code's exact vector (not x + sg(e - x), which can differ in the last bit):
                    # later stages then pick exactly the codes ``encode`` picks.
                    codes = layer.indices_to_codes(out.indices)
            residual = residual - codes
            indices.append(out.indices)
            for name, value in out.losses.items():
                losses[name] = losses[name] + value if name in losses else value
        return QuantizerOutput(quantized=quantized, indices=torch.stack(indices, dim=1), losses=losses)
