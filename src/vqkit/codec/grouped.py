"""Entropy model 4: a grouped prior's integer network codes a grid in a fixed number of parallel steps.

A grid's codes are coded step by step (``vqkit.priors.grouped.step_map``). Each code x is coded in two
parts, (hi, lo) = ``IntegerPrior.split(x)``: the rank of x in the prior's code order, hi = rank // K_lo
and lo = rank % K_lo (``IntegerPrior.k_hi``, ``k_lo``; about sqrt(K) each): step s
codes the hi parts of all its positions in raster order, then their lo parts in raster order. The
tables come from the integer network (vqkit.priors.integer): one call (``step_hidden``) on the codes of
steps < s gives every position's features, the hi tables follow from them (``hi_logits``), and the lo
tables from them and the hi parts (``lo_logits``). The decoder makes the very same calls on what it
has decoded so far. The network computes in integers only (vqkit.priors.integer), so the
tables are the same on every machine, for every batch of images and thread count: images of one
shape are coded together, in batches of any size, and a file decodes alone as it decodes beside
others. Coding is always without a class label (the "no label" embedding).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from vqkit.codec.coder import StepDecoder, StreamEncoder
from vqkit.codec.container import CodecError
from vqkit.codec.tables import code_bits, frequencies_from_int_logits
from vqkit.priors.grouped import step_map
from vqkit.priors.integer import IntegerPrior

BATCH_CODES = 1 << 16  # code positions per network call: 1,024 CIFAR-10 grids, or part of a photo's


def _batches(shapes: Sequence[tuple[int, int]]) -> Iterator[list[int]]:
    """Indices of the images to code together: one shape per batch, at most BATCH_CODES positions
    (one image at least). The tables do not depend on the batch, so this is a speed choice only."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        by_shape.setdefault(tuple(shape), []).append(i)  # type: ignore[arg-type]
    for (h, w), items in by_shape.items():
        per = max(1, BATCH_CODES // (h * w))
        for start in range(0, len(items), per):
            yield items[start : start + per]


class GroupedCoder:
    """Integer tables from a grouped prior's integer network, step by step (EntropyModel.GROUPED)."""

    def __init__(self, prior: IntegerPrior, codebook_size: int) -> None:
        if prior.codebook_size != codebook_size:
            raise CodecError(
                f"the grouped prior models {prior.codebook_size} codes; the run's codebook has "
                f"{codebook_size}"
            )
        self.prior = prior
        self.codebook_size = codebook_size
        self.digest = prior.digest()

    def _positions(self, h: int, w: int) -> list[np.ndarray]:
        """Raster positions (flat) of each step, in coding order."""
        steps = step_map(self.prior.schedule, h, w).reshape(-1)
        return [np.flatnonzero(steps == s) for s in range(self.prior.steps)]

    def _hidden(self, known: torch.Tensor, step: int, *, checked: bool = True) -> torch.Tensor:
        """(B, n_s, H) integer features of step ``step`` for the grids ``known`` (B, h, w), no label;
        ``checked=False`` (the decoder, whose codes it decoded and checked itself) skips the checks."""
        ids = torch.full((len(known),), self.prior.num_classes, dtype=torch.long)
        return self.prior.step_hidden(known, step, ids, checked=checked)

    @staticmethod
    def _tables(q: torch.Tensor) -> np.ndarray:
        """Integer logits (B, n, k) -> (B, n, k) int64 frequency tables."""
        b, n, k = q.shape
        return frequencies_from_int_logits(q.reshape(b * n, k).numpy()).reshape(b, n, k)

    def encode(self, grids: Sequence[np.ndarray]) -> tuple[list[bytes], list[float]]:
        """(h, w) int64 grids -> a payload per grid and its bits (-log2 p under the tables)."""
        payloads, bits = [b""] * len(grids), [0.0] * len(grids)
        for batch in _batches([g.shape for g in grids]):
            h, w = grids[batch[0]].shape
            known = torch.from_numpy(np.stack([grids[i] for i in batch]).astype(np.int64))
            flat = known.reshape(len(batch), -1)
            encoders = [StreamEncoder() for _ in batch]
            for step, pos in enumerate(self._positions(h, w)):
                if len(pos) == 0:
                    continue
                a = self._hidden(known, step)
                hi, lo = self.prior.split(flat[:, torch.from_numpy(pos)])  # (B, n_s) each
                for part, tables in ((hi, self._tables(self.prior.hi_logits(a))),
                                     (lo, self._tables(self.prior.lo_logits(a, hi)))):  # fmt: skip
                    symbols = part.numpy()
                    for j, i in enumerate(batch):
                        encoders[j].encode(symbols[j], tables[j])
                        bits[i] += code_bits(tables[j], symbols[j])
            for j, i in enumerate(batch):
                payloads[i] = encoders[j].finish()
        return payloads, bits

    def decode(
        self,
        payloads: Sequence[bytes],
        shapes: Sequence[tuple[int, int]],
        progress: Callable[[int], object] | None = None,
    ) -> list[np.ndarray]:
        """Payloads -> (h, w) int64 grids, one ``step_hidden`` call per step for a batch of same-shape
        grids; ``progress`` gets the number of codes decoded after each step of each batch. A code
        >= K (only a damaged payload decodes one) is a CodecError."""
        out: list[np.ndarray] = [np.empty(0)] * len(payloads)
        for batch in _batches(shapes):
            h, w = shapes[batch[0]]
            decoders = [StepDecoder(payloads[i]) for i in batch]
            known = torch.zeros((len(batch), h, w), dtype=torch.long)
            flat = known.view(len(batch), -1)
            for step, pos in enumerate(self._positions(h, w)):
                if len(pos) == 0:
                    continue
                a = self._hidden(known, step, checked=False)
                tables = self._tables(self.prior.hi_logits(a, checked=False))
                hi = torch.from_numpy(np.stack([decoders[j].many(tables[j]) for j in range(len(batch))]))
                tables = self._tables(self.prior.lo_logits(a, hi, checked=False))
                lo = torch.from_numpy(np.stack([decoders[j].many(tables[j]) for j in range(len(batch))]))
                try:  # join refuses a rank >= K, which only a damaged payload decodes
                    flat[:, torch.from_numpy(pos)] = self.prior.join(hi, lo)
                except ValueError as e:
                    raise CodecError(f"corrupt codes payload ({e})") from e
                if progress is not None:
                    progress(len(batch) * len(pos))
            for j, i in enumerate(batch):
                out[i] = known[j].numpy().copy()
        return out
