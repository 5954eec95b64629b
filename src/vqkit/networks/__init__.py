"""Convolutional encoder and decoder networks."""

from vqkit.networks.conv import Decoder, Encoder, ResidualBlock

__all__ = ["Decoder", "Encoder", "ResidualBlock"]
