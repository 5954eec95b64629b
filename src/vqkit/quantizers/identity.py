"""The identity quantizer: a plain autoencoder, z passed to the decoder as it is, without codes.

It meets the quantizer contract (vqkit.quantizers.base) with ``discrete`` False: quantized = z, no loss
terms, ``indices`` NO_CODE (-1) at every position, and every request for codes raises NoCodesError.
"""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn

import torch

from vqkit.quantizers.base import NO_CODE, NoCodesError, Quantizer, QuantizerOutput

NO_CODES = "this model was trained with quantization disabled (a plain autoencoder): it has no codes"


class IdentityQuantizer(Quantizer):
    discrete: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        # Never restarts anything; not saved, so the weights file holds no quantizer tensors.
        self.register_buffer("restarts_total", torch.zeros((), dtype=torch.long), persistent=False)

    @property
    def codebook_size(self) -> None:
        return None

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, _, h, w = z.shape
        return QuantizerOutput(quantized=z, indices=z.new_full((b, h, w), NO_CODE, dtype=torch.long))

    def frozen(self, z: torch.Tensor) -> QuantizerOutput:
        return self(z)

    def encode(self, z: torch.Tensor) -> NoReturn:
        raise NoCodesError(NO_CODES)

    def candidates(self, z: torch.Tensor, k: int) -> NoReturn:
        raise NoCodesError(NO_CODES)

    def indices_to_codes(self, indices: torch.Tensor) -> NoReturn:
        raise NoCodesError(NO_CODES)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Plain autoencoders saved before this quantizer existed carry an unused VectorQuantizer's
        # tensors under ``quantizer.``: they describe nothing here, so they are left out, not refused.
        for key in [k for k in state_dict if k.startswith(prefix)]:
            del state_dict[key]
