"""Quantizers: map continuous latents to discrete codes (or, the identity, pass them on)."""

from vqkit.config import QuantizerConfig
from vqkit.quantizers.base import NO_CODE, NoCodesError, Quantizer, QuantizerOutput
from vqkit.quantizers.identity import IdentityQuantizer
from vqkit.quantizers.vq import VectorQuantizer, kmeans, nearest_code, squared_distances


def build_quantizer(cfg: QuantizerConfig) -> Quantizer:
    """The quantizer the config asks for: ``enabled`` False gives a plain autoencoder's identity."""
    return VectorQuantizer(cfg) if cfg.enabled else IdentityQuantizer()


__all__ = [
    "NO_CODE",
    "IdentityQuantizer",
    "NoCodesError",
    "Quantizer",
    "QuantizerOutput",
    "VectorQuantizer",
    "build_quantizer",
    "kmeans",
    "nearest_code",
    "squared_distances",
]
