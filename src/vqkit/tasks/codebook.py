"""What each code stands for, and how often it is used.

The patch of code k: a ``context`` x ``context`` grid filled with the most used code (a plain, typical
background) gets code k at its centre; the decoder's output is cropped to the centre code's own f x f
pixels plus ``margin`` pixels on each side (default f / 2), so a tile shows the code and how it
blends into its neighbours. Filling the whole grid with code k instead would show a texture that
the model never produces (no real image is one code repeated), which is why the centre placement
was chosen.

Usage is counted over a whole data set (STYLE.md item 10), also per class when labels exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vqkit.data import ImageSet
from vqkit.metrics import CodebookUsage
from vqkit.runs import Run, RunError
from vqkit.tasks.features import iter_encoded
from vqkit.visual import image_grid


@dataclass
class CodebookStats:
    counts: np.ndarray  # (K,) int64 positions per code over the data
    per_class: np.ndarray | None  # (C, K) int64 when the data has labels
    class_names: tuple[str, ...] | None
    num_images: int

    @property
    def order(self) -> np.ndarray:
        """Codes by decreasing use; ties by code number."""
        return np.argsort(-self.counts, kind="stable")


def count_codes(run: Run, data: ImageSet, batch_size: int = 256) -> CodebookStats:
    if not run.model.quantizer.discrete:
        raise RunError(f"{run.path}: quantization is disabled in this run, so it has no codebook")
    if run.stages > 1:
        raise RunError(
            f"{run.path} is a residual VQ run ({run.stages} codebooks): vqkit codebook pictures one "
            "codebook; `vqkit eval` reports each stage's usage, perplexity and dead codes"
        )
    k = run.model.codebook_size
    counts = np.zeros(k, np.int64)
    per_class = None
    if data.labels is not None:
        per_class = np.zeros((int(data.labels.max()) + 1, k), np.int64)
    start = 0
    for enc in iter_encoded(run, data.images, batch_size):
        assert enc.indices is not None
        flat = enc.indices.reshape(len(enc.indices), -1).cpu().numpy()
        counts += np.bincount(flat.reshape(-1), minlength=k)
        if per_class is not None and data.labels is not None:
            for row, label in zip(flat, data.labels[start : start + len(flat)], strict=True):
                per_class[label] += np.bincount(row, minlength=k)
        start += len(flat)
    names = data.class_names
    if per_class is not None and (names is None or len(names) < len(per_class)):
        names = tuple(str(c) for c in range(len(per_class)))
    return CodebookStats(counts, per_class, names if per_class is not None else None, len(data))


def code_tiles(
    run: Run, background: int, *, context: int = 5, margin: int | None = None, batch_size: int = 128
) -> np.ndarray:
    """(K, T, T, C) uint8 tiles, T = f + 2 * margin: tile k is code k decoded at the centre of a
    ``context`` x ``context`` grid of code ``background``, cropped around the centre position."""
    f = run.model.downsample
    margin = f // 2 if margin is None else margin
    if context % 2 == 0 or context < 1:
        raise ValueError(f"context must be odd and >= 1, got {context}")
    if not 0 <= margin <= f * (context // 2):
        raise ValueError(f"margin must lie in [0, {f * (context // 2)}] for context {context}")
    k = run.model.codebook_size
    centre = context // 2
    lo, hi = centre * f - margin, (centre + 1) * f + margin
    tiles = []
    for start in range(0, k, batch_size):
        codes = np.arange(start, min(start + batch_size, k))
        grid = np.full((len(codes), context, context), background, dtype=np.int64)
        grid[:, centre, centre] = codes
        images = run.decode(grid)  # (B, context * f, context * f, C) uint8
        tiles.append(images[:, lo:hi, lo:hi])
    return np.concatenate(tiles)


def tile_picture(
    tiles: np.ndarray, order: np.ndarray, columns: int | None = None, pad: int = 1
) -> np.ndarray:
    """Tiles in ``order``, row by row, ``columns`` per row (default ceil(sqrt(K)))."""
    cols = columns or int(np.ceil(np.sqrt(len(order))))
    ordered = [tiles[i] for i in order]
    rows = [ordered[i : i + cols] for i in range(0, len(ordered), cols)]
    return image_grid(rows, pad=pad)


def codebook_summary(
    stats: CodebookStats, data_description: str, tile_info: dict[str, Any]
) -> dict[str, Any]:
    """The JSON written to the run folder (codebook.json)."""
    usage = CodebookUsage(len(stats.counts))
    usage.counts = stats.counts.copy()
    doc: dict[str, Any] = {
        "data": data_description,
        "num_images": stats.num_images,
        "codebook_size": len(stats.counts),
        "codebook_usage": usage.usage,
        "dead_codes": usage.dead_codes,
        "perplexity": usage.perplexity,
        "code_entropy_bits": usage.entropy_bits,
        "counts": stats.counts.tolist(),
        "order": stats.order.tolist(),
        "tiles": tile_info,
    }
    if stats.per_class is not None and stats.class_names is not None:
        doc["class_names"] = list(stats.class_names)
        doc["per_class_counts"] = stats.per_class.tolist()
        shares = stats.per_class / np.maximum(stats.per_class.sum(1, keepdims=True), 1)
        doc["per_class_top_codes"] = {
            name: [int(c) for c in np.argsort(-shares[i], kind="stable")[:8]]
            for i, name in enumerate(stats.class_names)
        }
    return doc
