"""Quantizers: map continuous latents to discrete codes."""

from vqkit.quantizers.base import QuantizerOutput
from vqkit.quantizers.vq import VectorQuantizer, kmeans, nearest_code, squared_distances

__all__ = ["QuantizerOutput", "VectorQuantizer", "kmeans", "nearest_code", "squared_distances"]
