"""Models: the VQ-VAE (encoder + quantizer + decoder)."""

from vqkit.models.vqvae import VQVAE, VQVAEOutput, pad_to_multiple

__all__ = ["VQVAE", "VQVAEOutput", "pad_to_multiple"]
