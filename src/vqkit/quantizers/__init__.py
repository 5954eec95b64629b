"""Quantizers: map continuous latents to discrete codes (or, the identity, pass them on).

One module per kind, each meeting the contract of ``base.py``; ``build_quantizer`` picks one from
``quantizer.kind`` (vqkit.config.QuantizerConfig).
"""

from vqkit.config import QuantizerConfig
from vqkit.quantizers.base import NO_CODE, NoCodesError, Quantizer, QuantizerOutput
from vqkit.quantizers.bsq import BinarySphericalQuantizer
from vqkit.quantizers.fsq import FiniteScalarQuantizer
from vqkit.quantizers.identity import IdentityQuantizer
from vqkit.quantizers.lfq import LookupFreeQuantizer
from vqkit.quantizers.rvq import ResidualVQ
from vqkit.quantizers.simvq import SimVQ
from vqkit.quantizers.vq import VectorQuantizer, kmeans, nearest_code, squared_distances

KINDS: dict[str, type[Quantizer]] = {
    "vq": VectorQuantizer,
    "fsq": FiniteScalarQuantizer,
    "lfq": LookupFreeQuantizer,
    "bsq": BinarySphericalQuantizer,
    "simvq": SimVQ,
    "rvq": ResidualVQ,
}


def build_quantizer(cfg: QuantizerConfig) -> Quantizer:
    """The quantizer the config asks for (``kind``); ``enabled`` False gives a plain autoencoder's
    identity."""
    if not cfg.enabled:
        return IdentityQuantizer()
    return KINDS[cfg.kind](cfg)


__all__ = [
    "KINDS",
    "NO_CODE",
    "BinarySphericalQuantizer",
    "FiniteScalarQuantizer",
    "IdentityQuantizer",
    "LookupFreeQuantizer",
    "NoCodesError",
    "Quantizer",
    "QuantizerOutput",
    "ResidualVQ",
    "SimVQ",
    "VectorQuantizer",
    "build_quantizer",
    "kmeans",
    "nearest_code",
    "squared_distances",
]
