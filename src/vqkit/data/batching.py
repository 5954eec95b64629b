"""Grouping lists of images into batches that a network can stack."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def iter_batches(images: list[np.ndarray], batch_size: int) -> Iterator[list[np.ndarray]]:
    """Consecutive batches of equal-sized images (a new batch starts whenever the size changes)."""
    batch: list[np.ndarray] = []
    for im in images:
        if batch and (im.shape != batch[0].shape or len(batch) == batch_size):
            yield batch
            batch = []
        batch.append(im)
    if batch:
        yield batch
