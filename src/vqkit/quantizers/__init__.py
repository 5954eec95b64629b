"""Quantizers: map continuous latents to discrete codes (or, the identity, pass them on)."""

from vqkit.config import ConfigError, QuantizerConfig
from vqkit.quantizers.base import NO_CODE, NoCodesError, Quantizer, QuantizerOutput
from vqkit.quantizers.bsq import BinarySphericalQuantizer
from vqkit.quantizers.identity import IdentityQuantizer
from vqkit.quantizers.lfq import LookupFreeQuantizer
from vqkit.quantizers.vq import VectorQuantizer, kmeans, nearest_code, squared_distances


def build_quantizer(cfg: QuantizerConfig) -> Quantizer:
    """The quantizer the config asks for (``kind``); ``enabled`` False gives a plain autoencoder's
    identity."""
    if not cfg.enabled:
        return IdentityQuantizer()
    if cfg.kind == "vq":
        return VectorQuantizer(cfg)
    if cfg.kind == "lfq":
        return LookupFreeQuantizer(cfg)
    if cfg.kind == "bsq":
        return BinarySphericalQuantizer(cfg)
    raise ConfigError(f"quantizer.kind={cfg.kind!r} is not built yet in this version of vqkit")


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
