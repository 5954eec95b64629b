"""Encoder and decoder of the VQ-VAE (van den Oord et al. 2017, sec. 4.1): strided convolutions,
residual blocks at the latent resolution, transposed convolutions back up; optionally residual blocks
at the resolutions in between too (``ModelConfig.outer_blocks``).

Encoder: images (B, C, H, W) -> z (B, D, H/f, W/f). Decoder: (B, D, H/f, W/f) -> (B, C, H, W).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vqkit.config import ModelConfig


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), the block of the VQ-VAE paper (bottleneck width r)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _stage_widths(cfg: ModelConfig) -> list[int]:
    """Channel width after each of the log2(f) resolution changes, widest at the latent grid."""
    n = int(math.log2(cfg.downsample))
    return [max(cfg.channels // 2 ** (n - 1 - i), 16) for i in range(n)]


def _outer(channels: int, blocks: int) -> list[nn.Module]:
    """``blocks`` residual blocks at an in-between resolution, bottleneck half the stage's width."""
    return [ResidualBlock(channels, max(channels // 2, 8)) for _ in range(blocks)]


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        widths = _stage_widths(cfg)
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        for i, c in enumerate(widths):
            if i > 0:
                layers.append(nn.ReLU())
            layers.append(nn.Conv2d(c_in, c, 4, stride=2, padding=1))  # halves H and W
            if i < len(widths) - 1:  # an in-between resolution, not yet the latent grid
                layers += _outer(c, cfg.outer_blocks)
            c_in = c
        layers += [nn.ReLU(), nn.Conv2d(c_in, cfg.channels, 3, padding=1)]
        layers += [ResidualBlock(cfg.channels, cfg.res_channels) for _ in range(cfg.res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(cfg.channels, cfg.quantizer.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Centre inputs: [0, 1] -> [-0.5, 0.5].
        return self.net(images - 0.5)  # (B, D, H/f, W/f)


class Decoder(nn.Module):
    output_offset = 0.5  # the network predicts images centred like the encoder's inputs

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        widths = _stage_widths(cfg)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.quantizer.code_dim, cfg.channels, 3, padding=1)]
        layers += [ResidualBlock(cfg.channels, cfg.res_channels) for _ in range(cfg.res_blocks)]
        c_in = cfg.channels
        outs = [*widths[1:], cfg.in_channels]
        for i, c in enumerate(outs):
            layers += [nn.ReLU(), nn.ConvTranspose2d(c_in, c, 4, stride=2, padding=1)]  # doubles
            if i < len(outs) - 1:  # an in-between resolution, not yet the image
                layers += _outer(c, cfg.outer_blocks)
            c_in = c
        self.net = nn.Sequential(*layers)

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        return self.net(quantized) + self.output_offset  # (B, C, H, W), unclamped; callers clamp for display
