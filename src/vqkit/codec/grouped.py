"""Entropy model 4: a grouped prior's integer network codes a grid in a fixed number of parallel steps.

A grid's codes are coded step by step (``vqkit.priors.grouped.step_map``), and within a step in raster
order. Step s's tables come from one call of the integer network (``IntegerPrior.step_logits``) on the
codes of steps < s, for every position of the step at once, and the decoder makes the very same call
on what it has decoded so far. The network computes in integers only (vqkit.priors.integer), so the
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
                f"the grouped prior models {prior.codebook_size} codes; the run's codebook has {codebook_size}"
            )
        self.prior = prior
        self.codebook_size = codebook_size
        self.digest = prior.digest()

    def _positions(self, h: int, w: int) -> list[np.ndarray]:
        """Raster positions (flat) of each step, in coding order."""
        steps = step_map(self.prior.schedule, h, w).reshape(-1)
        return [np.flatnonzero(steps == s) for s in range(self.prior.steps)]

    def _tables(self, known: torch.Tensor, step: int) -> np.ndarray:
        """(B, n_s, K) int64 tables of step ``step`` for the grids ``known`` (B, h, w)."""
        ids = torch.full((len(known),), self.prior.num_classes, dtype=torch.long)
        q = self.prior.step_logits(known, step, ids).numpy()
        b, n, k = q.shape
        return frequencies_from_int_logits(q.reshape(b * n, k)).reshape(b, n, k)

    def encode(self, grids: Sequence[np.ndarray]) -> tuple[list[bytes], list[float]]:
        """(h, w) int64 grids -> a payload per grid and its bits (-log2 p under the tables)."""
        payloads, bits = [b""] * len(grids), [0.0] * len(grids)
        for batch in _batches([g.shape for g in grids]):
            h, w = grids[batch[0]].shape
            known = torch.from_numpy(np.stack([grids[i] for i in batch]).astype(np.int64))
            flat = known.reshape(len(batch), -1).numpy()
            encoders = [StreamEncoder() for _ in batch]
            for step, pos in enumerate(self._positions(h, w)):
                if len(pos) == 0:
                    continue
                tables = self._tables(known, step)
                for j, i in enumerate(batch):
                    symbols = flat[j, pos]
                    encoders[j].encode(symbols, tables[j])
                    bits[i] += code_bits(tables[j], symbols)
            for j, i in enumerate(batch):
                payloads[i] = encoders[j].finish()
        return payloads, bits

    def decode(
        self,
        payloads: Sequence[bytes],
        shapes: Sequence[tuple[int, int]],
        progress: Callable[[int], object] | None = None,
    ) -> list[np.ndarray]:
        """Payloads -> (h, w) int64 grids, ``len(steps)`` network calls per batch of same-shape grids;
        ``progress`` gets the number of codes decoded after each step of each batch."""
        out: list[np.ndarray] = [np.empty(0)] * len(payloads)
        for batch in _batches(shapes):
            h, w = shapes[batch[0]]
            decoders = [StepDecoder(payloads[i]) for i in batch]
            known = torch.zeros((len(batch), h, w), dtype=torch.long)
            flat = known.view(len(batch), -1)
            for step, pos in enumerate(self._positions(h, w)):
                if len(pos) == 0:
                    continue
                tables = self._tables(known, step)
                index = torch.from_numpy(pos)
                for j in range(len(batch)):
                    flat[j, index] = torch.from_numpy(decoders[j].many(tables[j]))
                if progress is not None:
                    progress(len(batch) * len(pos))
            for j, i in enumerate(batch):
                out[i] = known[j].numpy().copy()
        return out
