"""Entropy models over code grids: the static code-frequency table and the autoregressive prior.

Static: ``entropy_static.json`` in the run folder holds integer code counts from encoding training
images; the coding table is ``tables.frequencies_from_counts`` of them (add-one smoothing).

Prior: the run's prior (``vqkit.priors``; any module with ``logits(indices (B, h, w)) -> (B, h*w, K)``
whose row t is bitwise independent of positions >= t). It is evaluated in float64 on one CPU thread,
images in fixed chunks (``prior_chunks``), and decoding position t repeats the encoder's call on the
partly decoded grid, so encoder and decoder compute the very same floats.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vqkit.codec.coder import StepDecoder
from vqkit.codec.container import CodecError
from vqkit.codec.tables import frequencies_from_counts, frequencies_from_logits
from vqkit.data import ImageSet, load_dataset
from vqkit.run import Run
from vqkit.training.checkpoint import RunError, model_fingerprint, read_format_json, write_json

STATIC_FILE = "entropy_static.json"
STATIC_FORMAT = "vqkit-entropy-static"
STATIC_FORMAT_VERSION = 1
PRIOR_BATCH = 16  # rows of every prior evaluation (short chunks padded); part of the format


# ---- static code-frequency model ------------------------------------------------------------------


def as_model_inputs(images: ImageSet | Sequence[np.ndarray] | str | Path, channels: int) -> list[np.ndarray]:
    """Images (arrays of 1 to 4 channels, an ImageSet or a data spec) -> what the model encodes:
    alpha dropped, grey replicated for an RGB model; colour for a grey model is refused."""
    if isinstance(images, str | Path):
        return load_dataset(images, channels=channels).images
    arrays = images.images if isinstance(images, ImageSet) else list(images)
    out = []
    for im in arrays:
        im = im[:, :, None] if im.ndim == 2 else im
        if im.shape[2] in (2, 4):
            im = im[:, :, :-1]  # alpha plays no part in the codes
        if im.shape[2] == 1 and channels == 3:
            im = np.repeat(im, 3, axis=2)
        if im.shape[2] != channels:
            raise CodecError(f"the run encodes {channels}-channel images, got {im.shape[2]} channels")
        out.append(np.ascontiguousarray(im, dtype=np.uint8))
    return out


def fit_static_model(
    run_dir: str | Path,
    images: ImageSet | Sequence[np.ndarray] | str | Path,
    *,
    device: str = "cpu",
    precision: str = "auto",
    batch_size: int = 256,
) -> Path:
    """Count the codes of ``images`` (arrays, an ImageSet or a data spec; normally the training set)
    under the run's model and write ``entropy_static.json`` into the run folder. Returns its path."""
    run = Run.load(run_dir, device, precision)
    arrays = as_model_inputs(images, run.channels)
    if not arrays:
        raise CodecError("fit_static_model needs at least one image")
    k = run.model.codebook_size
    counts = np.zeros(k, dtype=np.int64)
    for start in range(0, len(arrays), 4096):
        for grid in run.encode(arrays[start : start + 4096], batch_size=batch_size):
            counts += np.bincount(grid.reshape(-1), minlength=k)
    doc = {
        "format": STATIC_FORMAT,
        "format_version": STATIC_FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_fingerprint": model_fingerprint(run.path),
        "codebook_size": k,
        "images": len(arrays),
        "codes": int(counts.sum()),
        "source": str(images) if isinstance(images, str | Path) else f"{len(arrays)} images",
        "counts": counts.tolist(),
    }
    path = run.path / STATIC_FILE
    write_json(path, doc)
    return path


def load_static_table(run_dir: Path, codebook_size: int, digest: bytes) -> np.ndarray | None:
    """The run's (K,) integer coding table, or None when the run has no static model."""
    path = Path(run_dir) / STATIC_FILE
    if not path.is_file():
        return None
    doc = read_format_json(path, STATIC_FORMAT, STATIC_FORMAT_VERSION, "static entropy model")
    if doc.get("model_fingerprint") != digest[:8].hex():
        raise RunError(
            f"{path} was fitted for another model; refit it (vqkit compress RUN --fit-static DATA)"
        )
    counts = doc.get("counts")
    if (
        not isinstance(counts, list)
        or len(counts) != codebook_size
        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
    ):
        raise RunError(f"{path}: 'counts' must be {codebook_size} non-negative integers")
    return frequencies_from_counts(np.array(counts, dtype=np.int64))


# ---- autoregressive prior -------------------------------------------------------------------------


def load_run_prior(run_dir: Path) -> nn.Module | None:
    """The run's prior through ``vqkit.priors`` (when installed and trained), else None."""
    try:
        priors: Any = importlib.import_module("vqkit.priors")
        exists, load = priors.prior_exists, priors.load_prior
    except (ImportError, AttributeError):
        return None
    if not exists(run_dir):
        return None
    prior: nn.Module = load(run_dir)
    return prior


Tile = tuple[int, int, int, int]  # (y, x, valid height, valid width) of a tile in an image's code grid


def tile_count(shape: tuple[int, int], tile: tuple[int, int]) -> int:
    """How many tiles cover an (h, w) code grid."""
    return -(-shape[0] // tile[0]) * -(-shape[1] // tile[1])


def tile_at(shape: tuple[int, int], tile: tuple[int, int], j: int) -> Tile:
    """Tile ``j`` of an (h, w) code grid, in raster order of tile-sized windows from the top left; the
    last row and column of tiles are cut short by the grid's edge (their valid extent is smaller)."""
    (h, w), (th, tw) = shape, tile
    columns = -(-w // tw)
    y, x = (j // columns) * th, (j % columns) * tw
    return y, x, min(th, h - y), min(tw, w - x)


def prior_chunks(
    shapes: Sequence[tuple[int, int]], tile: tuple[int, int] | None = None
) -> Iterator[list[tuple[int, int]]]:
    """The (image, tile) rows of each PRIOR_BATCH-row evaluation, in coding order, made as they are
    needed (a corrupt header may claim millions of tiles: decoding fails on the first ones instead of
    listing them all).

    Each image is cut into tiles of the prior's grid (``tile``; None: the image's own grid is one tile)
    and its tiles into consecutive *groups* of at most PRIOR_BATCH. Consecutive groups with the same
    tile shape share a chunk while it has room; a group is never split, so an image's symbol order
    (group by group, position-major within a group) depends on its own grid shape alone."""
    chunk: list[tuple[int, int]] = []
    chunk_tile: tuple[int, int] | None = None
    for i, shape in enumerate(shapes):
        t = tile if tile is not None else shape
        count = tile_count(shape, t)
        for first in range(0, count, PRIOR_BATCH):
            rows = [(i, j) for j in range(first, min(count, first + PRIOR_BATCH))]
            if chunk and (chunk_tile != t or len(chunk) + len(rows) > PRIOR_BATCH):
                yield chunk
                chunk = []
            chunk.extend(rows)
            chunk_tile = t
    if chunk:
        yield chunk


def padding_sources(tile: tuple[int, int], valid: tuple[int, int]) -> np.ndarray:
    """(th*tw,) int64: for each position of a tile, the position whose code it holds. A valid position
    holds its own; one beyond the grid's edge copies the nearest valid position of its row, or below
    the last valid row, of its column. The source always comes earlier in raster order, so a decoder
    knows it when it reaches the padding position."""
    th, tw = tile
    vh, vw = valid
    rows = np.minimum(np.arange(th), vh - 1)[:, None]
    cols = np.minimum(np.arange(tw), vw - 1)[None, :]
    return (rows * tw + cols).reshape(-1).astype(np.int64)


@contextmanager
def exact_torch() -> Iterator[None]:
    """One intra-op thread (fixed reduction order) and no autograd; the old thread count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(threads)


class PriorCoder:
    """Integer coding tables from a causal prior, computed identically by encoder and decoder."""

    def __init__(self, prior: nn.Module, codebook_size: int) -> None:
        self.codebook_size = codebook_size
        digest = hashlib.sha256()
        for key, tensor in sorted(prior.state_dict().items()):
            if key == "logit_scale" and bool((tensor == 1).all()):
                continue  # the identity: files written before priors had a calibrated scale still match
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        self.digest = digest.digest()
        self.prior = copy.deepcopy(prior).cpu().double().eval()  # a copy: the caller's stays as it was
        config = getattr(prior, "config", None)
        grid = getattr(config, "grid", None)
        self.grid: tuple[int, int] | None = None if grid is None else (int(grid[0]), int(grid[1]))

    def _tile(self, shape: tuple[int, int]) -> tuple[int, int]:
        return self.grid if self.grid is not None else shape

    def _layout(
        self, chunk: list[tuple[int, int]], shapes: Sequence[tuple[int, int]]
    ) -> tuple[tuple[int, int], list[Tile], list[np.ndarray]]:
        """A chunk's tile shape, and per row its tile and its ``padding_sources``."""
        tile = self._tile(shapes[chunk[0][0]])
        tiles = [tile_at(shapes[i], tile, j) for i, j in chunk]
        return tile, tiles, [padding_sources(tile, (vh, vw)) for _, _, vh, vw in tiles]

    def _logits(self, grids: torch.Tensor) -> np.ndarray:
        b, h, w = grids.shape
        logits_fn: Any = self.prior.logits  # the prior's interface: (B, h, w) int64 -> (B, h*w, K)
        try:
            logits = logits_fn(grids)
        except (ValueError, RuntimeError) as e:
            raise CodecError(f"the prior cannot model {h}x{w} code grids: {e}") from e
        if tuple(logits.shape) != (b, h * w, self.codebook_size):
            raise CodecError(f"the prior returned logits {tuple(logits.shape)} for grids {(b, h, w)}")
        out: np.ndarray = logits.double().cpu().numpy()
        return out

    def _stream(self) -> Any | None:
        """A position-by-position walk (vqkit.priors.PriorStream) over PRIOR_BATCH rows, when the prior
        offers one."""
        stream = getattr(self.prior, "stream", None)
        return None if stream is None else stream(PRIOR_BATCH)

    def _step_tables(self, stream: Any, n: int) -> np.ndarray:
        """(n, K) integer tables of the stream's current position, for its first n rows."""
        logits = stream.logits()
        if logits.ndim != 2 or logits.shape[1] != self.codebook_size:
            raise CodecError(
                f"the prior returned logits {tuple(logits.shape)} for {self.codebook_size} codes"
            )
        return frequencies_from_logits(logits[:n].double().cpu().numpy())

    def segments(self, grids: Sequence[np.ndarray]) -> Iterator[tuple[int, np.ndarray, np.ndarray, bool]]:
        """(image, (n,) symbols, (n, K) int64 tables, whether it is the image's last segment): each
        image's symbols in coding order, a chunk's worth at a time (encoder).

        A grid is coded in tiles of the prior's grid (``prior_chunks``; positions beyond the grid's
        edge are padding, filled by ``padding_sources`` and not coded). Every evaluation is a batch of
        exactly PRIOR_BATCH rows (a short chunk is padded with tiles of code 0), because BLAS kernels
        round differently for different batch sizes: with one batch shape, a tile's logits do not depend
        on how many tiles, or which, are coded beside it, so files written together decode alone and
        vice versa. With a streaming prior the encoder walks each chunk position by position exactly as
        the decoder will, so both see bitwise the same logits; that costs one position's compute per
        step instead of a whole forward pass per decoded position."""
        shapes = [(int(g.shape[0]), int(g.shape[1])) for g in grids]
        for chunk in prior_chunks(shapes, self.grid):
            (th, tw), tiles, sources = self._layout(chunk, shapes)
            n, length = len(chunk), th * tw
            batch = torch.zeros((PRIOR_BATCH, length), dtype=torch.int64)
            for b, ((i, _), (y, x, vh, vw)) in enumerate(zip(chunk, tiles, strict=True)):
                tile = np.zeros((th, tw), dtype=np.int64)
                tile[:vh, :vw] = grids[i][y : y + vh, x : x + vw]
                batch[b] = torch.from_numpy(tile.reshape(-1)[sources[b]])
            valid = np.stack(sources) == np.arange(length)  # a padding position holds an earlier one's code
            with exact_torch():
                stream = self._stream()
                if stream is None:
                    per_row = np.stack(
                        [frequencies_from_logits(rows) for rows in self._logits(batch.view(-1, th, tw))[:n]]
                    )
                else:
                    steps = []
                    for t in range(length):
                        steps.append(self._step_tables(stream, n))
                        stream.push(batch[:, t])
                    per_row = np.stack(steps, axis=1)  # (n, length, K)
            codes = batch[:n].numpy()
            for i, group in itertools.groupby(range(n), key=lambda row: chunk[row][0]):
                rows = list(group)  # an image's rows are consecutive; its symbols go position-major
                b, end = rows[0], rows[-1] + 1
                keep = valid[b:end].T.reshape(-1)
                tabs = per_row[b:end].transpose(1, 0, 2).reshape(-1, self.codebook_size)[keep]
                last = chunk[end - 1][1] == tile_count(shapes[i], (th, tw)) - 1
                yield i, codes[b:end].T.reshape(-1)[keep], tabs, last

    def decode(
        self,
        payloads: Sequence[bytes],
        shapes: Sequence[tuple[int, int]],
        progress: Callable[[int], object] | None = None,
    ) -> list[np.ndarray]:
        """Decode each payload to an (h, w) grid, one position at a time, PRIOR_BATCH tile rows per step
        (the payloads may come from one file or many: a tile's tables do not depend on its neighbours).
        ``progress`` is called after each chunk with the number of codes it decoded."""
        out: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(shapes)  # each made at its first tile
        decoders: dict[int, StepDecoder] = {}
        with exact_torch():
            for chunk in prior_chunks(shapes, self.grid):
                (th, tw), tiles, sources = self._layout(chunk, shapes)
                n, length = len(chunk), th * tw
                steppers = []
                for i, j in chunk:
                    if j == 0:  # an image's decoder and grid live from its first tile to its last
                        decoders[i] = StepDecoder(payloads[i])
                        out[i] = np.zeros(shapes[i], dtype=np.int64)
                    steppers.append(decoders[i])
                grid = torch.zeros((PRIOR_BATCH, th, tw), dtype=torch.int64)  # future positions: 0
                flat = grid.view(PRIOR_BATCH, length)
                stream = self._stream()
                for t in range(length):
                    rows = None
                    for b in range(n):
                        if sources[b][t] != t:  # padding: a copy of an earlier position, not coded
                            flat[b, t] = flat[b, int(sources[b][t])]
                            continue
                        if rows is None:
                            if stream is None:  # a prior without a stream: a whole pass per position
                                rows = frequencies_from_logits(self._logits(grid)[:n, t])
                            else:
                                rows = self._step_tables(stream, n)
                        flat[b, t] = steppers[b](rows[b])
                    if stream is not None:
                        stream.push(flat[:, t])
                done = 0
                for b, ((i, j), (y, x, vh, vw)) in enumerate(zip(chunk, tiles, strict=True)):
                    out[i][y : y + vh, x : x + vw] = grid[b, :vh, :vw].numpy()
                    done += vh * vw
                    if j == tile_count(shapes[i], (th, tw)) - 1:
                        del decoders[i]
                if progress is not None:
                    progress(done)
        return out
