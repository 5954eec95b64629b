"""The quantizer contract shared by every quantizer in vqkit."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, D, h, w), straight-through in training: gradients reach z
    indices: torch.Tensor  # (B, h, w) int64
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # scalar terms, already weighted
    stats: dict[str, float] = field(default_factory=dict)  # batch statistics for logging
