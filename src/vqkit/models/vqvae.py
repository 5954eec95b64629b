"""VQ-VAE: encoder -> per-position vector quantizer -> decoder (van den Oord et al. 2017).

Public shapes: images (B, C, H, W) float in [0, 1]; z and quantized (B, D, h, w);
indices (B, h, w) int64 with h = ceil(H / f), w = ceil(W / f), or (B, S, h, w) for a residual
quantizer of S = ``quantizer.stages`` stages (a prefix (B, s, h, w) of them decodes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vqkit.config import ModelConfig
from vqkit.networks import Decoder, Encoder
from vqkit.quantizers import Quantizer, QuantizerOutput, build_quantizer


@dataclass
class VQVAEOutput:
    reconstruction: torch.Tensor  # (B, C, H, W), unclamped
    # (B, h, w) int64 ((B, S, h, w) with S > 1 stages); NO_CODE (-1) everywhere when the quantizer is not
    # discrete
    indices: torch.Tensor
    # "reconstruction", "commitment", ["codebook"], "total"; "reconstruction" and "total" alone with
    # frozen codes or without a discrete quantizer
    losses: dict[str, torch.Tensor]


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad (B, C, H, W) on the bottom and right so H and W divide by ``multiple``."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return images
    return F.pad(images, (0, pw, 0, ph), mode="replicate")


class VQVAE(nn.Module):
    """A VQ-VAE. ``VQVAE(codebook_size=64, latent_dim=32)`` builds the default networks with that
    codebook; pass ``config=ModelConfig(...)`` for full control (channels, residual blocks,
    downsampling factor, code dimension, loss weights)."""

    def __init__(
        self,
        config: ModelConfig | None = None,
        *,
        codebook_size: int | None = None,
        latent_dim: int | None = None,
        **quantizer_overrides: Any,
    ) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        q: dict[str, Any] = dict(quantizer_overrides)
        if codebook_size is not None:
            q["codebook_size"] = codebook_size
        if latent_dim is not None:
            q["code_dim"] = latent_dim
        if q:
            cfg = dataclasses.replace(cfg, quantizer=dataclasses.replace(cfg.quantizer, **q))
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        # quantizer.enabled = False: the identity, a plain autoencoder (quantizer.discrete is False)
        self.quantizer: Quantizer = build_quantizer(cfg.quantizer)

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def codebook_size(self) -> int:
        """K. A plain autoencoder (``quantizer.discrete`` False) has no codes: this is then the
        configured quantizer.codebook_size, which nothing uses (the quantizer's own is None)."""
        return self.config.quantizer.codebook_size

    # ------------------------------------------------------------------------------ building blocks

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) -> z (B, D, h, w); pads H, W up to a multiple of f first."""
        return self.encoder(pad_to_multiple(images, self.downsample))

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        out: QuantizerOutput = self.quantizer(z)
        return out

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """quantized (B, D, h, w) -> images (B, C, h*f, w*f), unclamped."""
        return self.decoder(quantized)

    # ----------------------------------------------------------------------------------- public API

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) in [0, 1] -> indices (B, h, w) int64 ((B, S, h, w) with S > 1 stages);
        NoCodesError for a plain autoencoder."""
        return self.quantizer.encode(self.encode_latents(images))

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """indices (B, h, w) (or a prefix (B, s, h, w) of S > 1 stages) -> images (B, C, H, W) clamped
        to [0, 1]; cropped to ``size`` if given."""
        out = self.decode(self.quantizer.indices_to_codes(indices)).clamp(0, 1)
        return out if size is None else out[..., : size[0], : size[1]]

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) -> reconstructions (B, C, H, W) in [0, 1], any H and W."""
        h, w = images.shape[-2:]
        z = self.encode_latents(images)
        return self.decode(self.quantize(z).quantized).clamp(0, 1)[..., :h, :w]

    def forward(
        self, images: torch.Tensor, target: torch.Tensor | None = None, *, frozen_codes: bool = False
    ) -> VQVAEOutput:
        """Training/evaluation pass. Loss = w_rec * MSE(reconstruction, target) + quantizer terms
        (VQ-VAE eq. 3). ``target`` defaults to ``images``; a denoiser passes the clean images.
        ``frozen_codes``: encoder and quantizer run without gradients and without updating any
        state, whatever their mode, and the loss is the reconstruction term alone (decoder
        fine-tuning)."""
        target = images if target is None else target
        h, w = images.shape[-2:]
        if frozen_codes:
            # The codes and vectors the codec decodes (no straight-through, no EMA or restarts,
            # whatever mode the quantizer is in): every image keeps its codes.
            with torch.no_grad():
                q = self.quantizer.frozen(self.encode_latents(images))
        else:
            q = self.quantize(self.encode_latents(images))
        recon = self.decode(q.quantized)[..., :h, :w]
        losses = {} if frozen_codes else dict(q.losses)
        losses["reconstruction"] = self.config.reconstruction_weight * F.mse_loss(
            recon.float(), target.float()
        )
        losses["total"] = sum(losses.values(), torch.zeros((), device=images.device))
        return VQVAEOutput(reconstruction=recon, indices=q.indices, losses=losses)
