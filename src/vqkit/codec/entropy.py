"""Entropy models over code grids, pure: tables in, bytes out (no run folders, data sets or files).

Static: a (K,) integer table from code counts (``tables.frequencies_from_counts``, add-one smoothing)
codes every position alike (vqkit.codec.coder). Where the counts come from, the run folder's
``entropy_static.json``, is vqkit.codec.fitting.

Prior: a causal prior over code grids (``vqkit.priors``; any module with ``logits(indices (B, h, w)) ->
(B, h*w, K)`` whose row t is bitwise independent of positions >= t) gives ``PriorCoder`` per-position
integer tables. It is evaluated in float64, images in fixed chunks (``prior_chunks``), each chunk on one
CPU thread (several chunks may run side by side, one per thread), and decoding position t repeats the
encoder's call on the partly decoded grid, so encoder and decoder compute the very same floats.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from torch import nn

from vqkit.codec.coder import StepDecoder
from vqkit.codec.container import CodecError
from vqkit.codec.tables import frequencies_from_logits

PRIOR_BATCH = 16  # rows of every prior evaluation (short chunks padded); part of the format
CONTEXT = 2  # rows and columns of overlap between the windows of EntropyModel.PRIOR_OVERLAP; format

T = TypeVar("T")


# ---- autoregressive prior -------------------------------------------------------------------------


Tile = tuple[int, int]  # (th, tw): the prior's grid, the shape of every window


class Row(NamedTuple):
    """One window of one image in a chunk: the image, the window's block (row, column), and whether
    it is the image's last window in coding order."""

    image: int
    by: int
    bx: int
    last: bool


@dataclass(frozen=True)
class Layout:
    """How the coder cuts one image's (h, w) code grid into windows of the prior's grid ``tile``.

    Windows sit at a stride of ``tile - context`` from the top left. Window (by, bx) codes its block:
    the positions not coded by the windows above or to its left, i.e. all of the first window, else
    all but its first ``context`` rows (when by > 0) and columns (when bx > 0). So every window
    but the first sees already coded codes above and to the left of what it codes. With context (0, 0)
    the windows are independent tiles. A window position past the grid's edge is *padding*: it holds
    the code of the nearest grid position of its row (or, below the last row, of its column), which
    comes earlier in the window's raster order, and is never coded."""

    shape: tuple[int, int]
    tile: Tile
    context: tuple[int, int] = (0, 0)

    @property
    def stride(self) -> tuple[int, int]:
        return self.tile[0] - self.context[0], self.tile[1] - self.context[1]

    @property
    def counts(self) -> tuple[int, int]:
        """Windows per column and per row of the grid."""
        return (
            1 + max(0, -(-(self.shape[0] - self.tile[0]) // self.stride[0])),
            1 + max(0, -(-(self.shape[1] - self.tile[1]) // self.stride[1])),
        )

    def window(self, by: int, bx: int) -> tuple[np.ndarray, np.ndarray]:
        """Window (by, bx): ``sources`` (th*tw,) int64, the flat grid position (row * w + column) whose
        code each window position holds, and ``coded`` (th*tw,) bool, the positions this window codes."""
        (h, w), (th, tw), (cy, cx), (sy, sx) = self.shape, self.tile, self.context, self.stride
        rows, cols = by * sy + np.arange(th), bx * sx + np.arange(tw)
        sources = np.minimum(rows, h - 1)[:, None] * w + np.minimum(cols, w - 1)[None, :]
        keep_rows = (rows < h) & (np.arange(th) >= (cy if by else 0))
        keep_cols = (cols < w) & (np.arange(tw) >= (cx if bx else 0))
        return sources.reshape(-1).astype(np.int64), (keep_rows[:, None] & keep_cols[None, :]).reshape(-1)

    def waves(self) -> Iterator[list[tuple[int, int]]]:
        """The windows in coding order, as waves of windows that do not depend on each other: all
        tiles in raster order when there is no context, else the anti-diagonals by + bx = d in turn
        (a window's context lies in windows above and to the left, i.e. in earlier diagonals), top
        first within one."""
        ny, nx = self.counts
        if self.context == (0, 0):
            yield [(by, bx) for by in range(ny) for bx in range(nx)]
            return
        for d in range(ny + nx - 1):
            yield [(by, d - by) for by in range(max(0, d - nx + 1), min(d, ny - 1) + 1)]


def prior_chunks(
    shapes: Sequence[tuple[int, int]], tile: Tile | None = None, context: tuple[int, int] = (0, 0)
) -> Iterator[list[Row]]:
    """The rows of each PRIOR_BATCH-row evaluation, in coding order, made as they are needed (a
    corrupt header may claim millions of windows: decoding fails on the first ones instead of listing
    them all).

    Each image is cut into windows (``Layout``; ``tile`` None: the image's own grid is one window),
    each wave of its windows into consecutive *groups* of at most PRIOR_BATCH. Consecutive groups of
    the same window shape share a chunk while it has room, but never two groups of one image (the
    second may need the first's codes as context); a group is never split, so an image's symbol
    order (group by group, position-major within a group) depends on its own grid shape alone."""
    chunk: list[Row] = []
    chunk_tile: Tile | None = None
    for i, shape in enumerate(shapes):
        t = tile if tile is not None else shape
        layout = Layout(shape, t, context if tile is not None else (0, 0))
        ny, nx = layout.counts
        for wave in layout.waves():
            for first in range(0, len(wave), PRIOR_BATCH):
                rows = [
                    Row(i, by, bx, (by, bx) == (ny - 1, nx - 1))
                    for by, bx in wave[first : first + PRIOR_BATCH]
                ]
                if chunk and (
                    chunk_tile != t or len(chunk) + len(rows) > PRIOR_BATCH or chunk[-1].image == i
                ):
                    yield chunk
                    chunk = []
                chunk.extend(rows)
                chunk_tile = t
    if chunk:
        yield chunk


@contextmanager
def exact_torch() -> Iterator[int]:
    """One intra-op thread (fixed reduction order) and no autograd; yields the thread count it
    replaced (the cores the caller let torch use), which it restores on exit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield threads
    finally:
        torch.set_num_threads(threads)


def _in_worker(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a worker thread as exact_torch runs the calling one. Grad mode is per thread;
    so is the OpenMP thread count, which torch.set_num_threads sets for the calling thread (the
    process-wide value, already 1 under exact_torch, is what a new thread starts from)."""
    torch.set_num_threads(1)
    with torch.inference_mode():
        return fn(*args)


def _ordered_map(fn: Callable[[Any], T], items: Iterator[Any], workers: int) -> Iterator[T]:
    """fn over items in ``workers`` threads, results in the items' order, at most workers + 1 items
    taken ahead (items may be made lazily and be endless). One worker: a plain loop, no thread."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        ahead: deque[Future[T]] = deque()
        for item in items:
            ahead.append(pool.submit(_in_worker, fn, item))
            if len(ahead) > workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


class PriorCoder:
    """Integer coding tables from a causal prior, computed identically by encoder and decoder.

    ``overlap``: False, the grid is coded in independent tiles of the prior's grid (EntropyModel.PRIOR);
    True, in windows overlapping by CONTEXT rows and columns (EntropyModel.PRIOR_OVERLAP), so each
    window's codes are predicted from the codes above and to the left of it too."""

    def __init__(self, prior: nn.Module, codebook_size: int, overlap: bool = False) -> None:
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
        self.grid: Tile | None = None if grid is None else (int(grid[0]), int(grid[1]))
        self.context = (0, 0)
        if overlap and self.grid is not None:  # a window of 1 row (column) has no room for context
            self.context = (min(CONTEXT, self.grid[0] - 1), min(CONTEXT, self.grid[1] - 1))

    def layout(self, shape: tuple[int, int]) -> Layout:
        """How this coder cuts an (h, w) grid into windows."""
        return Layout(shape, self.grid if self.grid is not None else shape, self.context)

    def _windows(
        self, chunk: list[Row], shapes: Sequence[tuple[int, int]]
    ) -> tuple[Tile, list[tuple[np.ndarray, np.ndarray]]]:
        """A chunk's window shape, and per row its window's (sources, coded) (``Layout.window``)."""
        layouts = {i: self.layout(shapes[i]) for i in {row.image for row in chunk}}
        tile = layouts[chunk[0].image].tile
        return tile, [layouts[row.image].window(row.by, row.bx) for row in chunk]

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

    def _chunk_tables(
        self, chunk: list[Row], grids: Sequence[np.ndarray], shapes: Sequence[tuple[int, int]]
    ) -> tuple[list[Row], np.ndarray, np.ndarray, np.ndarray]:
        """One chunk's (n, length) codes, (n, length) coded mask and (n, length, K) tables (encoder)."""
        (th, tw), windows = self._windows(chunk, shapes)
        n, length = len(chunk), th * tw
        batch = torch.zeros((PRIOR_BATCH, length), dtype=torch.int64)
        for b, (row, (sources, _)) in enumerate(zip(chunk, windows, strict=True)):
            batch[b] = torch.from_numpy(grids[row.image].reshape(-1)[sources].astype(np.int64))
        coded = np.stack([c for _, c in windows])  # (n, length)
        stream = self._stream()
        if stream is None:
            per_row = np.stack(
                [frequencies_from_logits(rows) for rows in self._logits(batch.view(-1, th, tw))[:n]]
            )
        else:
            per_row = np.zeros((n, length, self.codebook_size), dtype=np.int64)
            for t in range(length):
                if coded[:, t].any():  # else context or padding in every row: as the decoder, no tables
                    per_row[:, t] = self._step_tables(stream, n)
                stream.push(batch[:, t])
        return chunk, batch[:n].numpy(), coded, per_row

    def segments(
        self, grids: Sequence[np.ndarray], threads: int | None = None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, bool]]:
        """(image, (n,) symbols, (n, K) int64 tables, whether it is the image's last segment): each
        image's symbols in coding order, a chunk's worth at a time (encoder).

        A grid is coded in windows of the prior's grid (``prior_chunks``, ``Layout``); a window
        position that another window codes (context) or that lies past the grid's edge (padding) is
        fed to the prior but not coded. Every evaluation is a batch of exactly PRIOR_BATCH rows (a
        short chunk is padded with windows of code 0), because BLAS kernels round differently for
        different batch sizes: with one batch shape, a window's logits do not depend on how many
        windows, or which, are coded beside it, so files written together decode alone and vice
        versa. With a streaming prior the encoder walks each chunk position by position exactly as
        the decoder will, so both see bitwise the same logits; that costs one position's compute per
        step instead of a whole forward pass per decoded position.

        The encoder knows every code, so chunks do not wait for each other: ``threads`` of them (None:
        torch's thread count) are evaluated at once, each on one thread, and yielded in order."""
        shapes = [(int(g.shape[0]), int(g.shape[1])) for g in grids]
        with exact_torch() as cores:
            chunks = prior_chunks(shapes, self.grid, self.context)
            tables = _ordered_map(lambda c: self._chunk_tables(c, grids, shapes), chunks, threads or cores)
            for chunk, codes, coded, per_row in tables:
                n = len(chunk)
                for i, group in itertools.groupby(range(n), key=lambda b: chunk[b].image):
                    rows = list(group)  # an image's rows are consecutive; its symbols go position-major
                    b, end = rows[0], rows[-1] + 1
                    keep = coded[b:end].T.reshape(-1)
                    tabs = per_row[b:end].transpose(1, 0, 2).reshape(-1, self.codebook_size)[keep]
                    yield i, codes[b:end].T.reshape(-1)[keep], tabs, chunk[end - 1].last

    def decode(
        self,
        payloads: Sequence[bytes],
        shapes: Sequence[tuple[int, int]],
        progress: Callable[[int], object] | None = None,
        threads: int | None = None,
    ) -> list[np.ndarray]:
        """Decode each payload to an (h, w) grid, one position at a time, PRIOR_BATCH window rows per
        step (the payloads may come from one file or many: a window's tables do not depend on its
        batch neighbours). ``progress`` is called after each chunk with the number of codes it decoded.

        An image's codes come out of one entropy-decoder stream in order, so its chunks run one after
        another; different images do not wait for each other. With ``threads`` (None: torch's thread
        count) above 1 and several images, the images are dealt into that many lanes of about equal
        code counts, each decoded on its own thread: the chunks then differ from the encoder's, which
        the batch-independence above allows."""
        with exact_torch() as cores:
            workers = min(threads or cores, len(shapes))
            if workers <= 1:
                return self._decode_lane(payloads, shapes, progress, threading.Event())
            lanes: list[list[int]] = [[] for _ in range(workers)]
            load = [0] * workers
            for i in sorted(range(len(shapes)), key=lambda i: -shapes[i][0] * shapes[i][1]):
                lane = load.index(min(load))  # the biggest images first, each to the emptiest lane
                lanes[lane].append(i)
                load[lane] += shapes[i][0] * shapes[i][1]
            lanes = [sorted(lane) for lane in lanes if lane]  # each lane in file order
            stop = threading.Event()  # one lane failed: the others give up at their next chunk
            out: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(shapes)
            with ThreadPoolExecutor(workers) as pool:
                futures = {
                    pool.submit(
                        _in_worker, self._decode_lane, [payloads[i] for i in lane], [shapes[i] for i in lane],
                        progress, stop,
                    ): lane
                    for lane in lanes
                }  # fmt: skip
                try:
                    for future in as_completed(futures):
                        for i, grid in zip(futures[future], future.result(), strict=True):
                            out[i] = grid
                except BaseException:
                    stop.set()
                    raise
            return out

    def _decode_lane(
        self,
        payloads: Sequence[bytes],
        shapes: Sequence[tuple[int, int]],
        progress: Callable[[int], object] | None,
        stop: threading.Event,
    ) -> list[np.ndarray]:
        """``decode`` on one thread, under exact_torch; returns early (incomplete) once ``stop`` is set."""
        out: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(shapes)  # each made at its first window
        decoders: dict[int, StepDecoder] = {}
        for chunk in prior_chunks(shapes, self.grid, self.context):
            if stop.is_set():
                break
            (th, tw), windows = self._windows(chunk, shapes)
            n, length = len(chunk), th * tw
            steppers = []
            for row in chunk:
                if (row.by, row.bx) == (0, 0):  # an image's decoder and grid live until its last window
                    decoders[row.image] = StepDecoder(payloads[row.image])
                    out[row.image] = np.zeros(shapes[row.image], dtype=np.int64)
                steppers.append(decoders[row.image])
            grids = [out[row.image].reshape(-1) for row in chunk]  # views: decoded codes land in out
            flat = torch.zeros((PRIOR_BATCH, length), dtype=torch.int64)  # future positions: 0
            stream = self._stream()
            done = 0
            for t in range(length):
                rows = None
                for b, (sources, coded) in enumerate(windows):
                    if not coded[t]:  # context or padding: a code decoded before, not coded here
                        flat[b, t] = int(grids[b][sources[t]])
                        continue
                    if rows is None:
                        if stream is None:  # a prior without a stream: a whole pass per position
                            rows = frequencies_from_logits(self._logits(flat.view(-1, th, tw))[:n, t])
                        else:
                            rows = self._step_tables(stream, n)
                    flat[b, t] = grids[b][sources[t]] = steppers[b](rows[b])
                    done += 1
                if stream is not None:
                    stream.push(flat[:, t])
            for row in chunk:
                if row.last:
                    del decoders[row.image]
            if progress is not None:
                progress(done)
        return out
