"""The Python face of a trained run: load it, encode images to indices, decode, reconstruct.

Mirrors the command line (``vqkit encode / decode / reconstruct``). Images go in as (H, W, C) uint8
arrays, as files store them; indices come out as (h, w) int64 grids, or (S, h, w) for a residual
quantizer of S stages (``stages``), whose prefixes (s, h, w), 1 <= s <= S, decode too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqkit import precision
from vqkit.config import RunConfig
from vqkit.data import iter_batches, to_float, to_uint8_hwc
from vqkit.models import VQVAE
from vqkit.models.inference import FastDecoder
from vqkit.runs import shipped
from vqkit.runs.checkpoint import load_model, load_run_config, read_config_doc


@dataclass
class Run:
    path: Path
    config: RunConfig
    model: VQVAE
    device: torch.device
    meta: dict[str, Any]
    precision: str = "auto"  # encode/decode/reconstruct arithmetic; see vqkit.precision
    _fast: FastDecoder | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", precision: str = "auto") -> Run:
        """Load a run folder, or a shipped model by name (``vqkit models``; its files are checked
        against the package's SHA-256 registry first). Inference runs channels-last (faster
        convolutions on CPU and GPU) and, with precision "auto", in bf16 where the hardware has native
        bf16 (the quantizer stays fp32)."""
        path = shipped.resolve(path)  # a shipped model's name, or a run folder
        name = shipped.shipped_name(path)
        if name is not None:
            shipped.verify(name)  # every file against the package registry's SHA-256
        doc = read_config_doc(path)
        dev = torch.device(device)
        model = load_model(path, dev).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return cls(path, load_run_config(path), model, dev, doc.get("meta", {}), precision)

    @property
    def channels(self) -> int:
        return self.config.model.in_channels

    @property
    def stages(self) -> int:
        """S, codes per position (1 for every quantizer but residual VQ)."""
        return self.model.quantizer.stages

    def _batches(self, images: list[np.ndarray], batch_size: int) -> Iterator[torch.Tensor]:
        for batch in iter_batches(images, batch_size):
            # uint8 crosses to the device (a quarter of float32's bytes); conversion happens there.
            x = to_float(torch.from_numpy(np.stack(batch)).to(self.device))
            yield x.contiguous(memory_format=torch.channels_last)

    def inference(self) -> contextlib.ExitStack:
        """The context encode/decode/reconstruct run under: inference mode and the run's precision."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(precision.autocast(self.device, self.precision))
        return stack

    def encode(self, images: list[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
        """(H, W, C) uint8 images -> (h, w) int64 index grids, h = ceil(H / f); (S, h, w) with S > 1
        stages."""
        out: list[np.ndarray] = []
        with self.inference():
            for x in self._batches(images, batch_size):
                out.extend(self.model.encode(x).cpu().numpy())
        return out

    @property
    def fast_decoder(self) -> FastDecoder:
        """The decoder in its inference form (vqkit.models.inference), built on first use from the
        weights as they are then: a Run is for inference, its model is not trained further."""
        if self._fast is None:
            self._fast = FastDecoder.from_model(self.model)
        return self._fast

    def decode_tensor(self, idx: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
        """(B, h, w) int64 indices on the run's device -> (B, H, W, C) uint8, without the range check;
        call it inside ``self.inference()``."""
        out = self.fast_decoder(idx).clamp(0, 1)
        return to_uint8_hwc(out if size is None else out[..., : size[0], : size[1]])

    def decode(self, indices: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """(B, h, w) index grids -> (B, H, W, C) uint8 images, cropped to ``size`` when given; with S > 1
        stages (B, s, h, w), the first 1 <= s <= S stages of each grid."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long, device=self.device)
        s = self.stages
        if s == 1 and idx.ndim != 3:
            raise ValueError(f"indices must be (B, h, w) grids, got shape {tuple(idx.shape)}")
        if s > 1 and (idx.ndim != 4 or not 1 <= idx.shape[1] <= s):
            raise ValueError(
                f"indices must be (B, s, h, w) with 1 <= s <= {s} stages (a residual VQ run), got "
                f"{tuple(idx.shape)}"
            )
        if idx.min() < 0 or idx.max() >= self.model.codebook_size:
            raise ValueError(f"indices must lie in [0, {self.model.codebook_size})")
        with self.inference():
            return self.decode_tensor(idx, size)

    def reconstruct(self, images: list[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
        """(H, W, C) uint8 images -> reconstructions of the same sizes."""
        out: list[np.ndarray] = []
        with self.inference():
            for x in self._batches(images, batch_size):
                if self.model.quantizer.discrete:  # through the indices: the fast decoder
                    out.extend(self.decode_tensor(self.model.encode(x), (x.shape[-2], x.shape[-1])))
                else:
                    out.extend(to_uint8_hwc(self.model.reconstruct(x)))
        return out
