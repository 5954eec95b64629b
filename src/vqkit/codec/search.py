"""Encoder-side code search: pick codes for what the decoder makes of them, not for latent distance.

The VQ-VAE encoder picks, per position, the code nearest to the encoder output. That code is not
always the one whose *decoded* image is closest to the input, because the decoder mixes neighbouring
codes. The search starts from the nearest codes and, position by position (``_sweep``), tries each
position's few nearest codes (``candidates``), keeping the one that lowers

    J = squared error (8-bit units, summed over pixels and channels) + lmbda * bits,

where bits is the code's cost under the entropy model that will code the file: with the run's prior
(``rate="auto"``), -log2 p(code | the codes before it in its window) from a prior walked along the
sweep, the grid cut into the prior's windows as the coder cuts it; otherwise the static table (no rate
term when the run has no table). With a grouped prior (vqkit.priors.grouped, its run's "auto" rate)
the sweep follows the prior's schedule instead, step by step: one ``step_hidden`` call at the start
of step s gives the features of all of its positions (their context, the codes of earlier steps, does
not change during the step), and a candidate's bits are -log2 p(hi) - log2 p(lo | hi), the two-part
head evaluated for the k candidates only. The prior's rate is greedy: a choice's effect on the bits of
later positions is not counted. ``passes`` repeats the sweep. The decoder,
the file format and decoding speed are untouched: this only chooses better indices, at an encoding
cost of about passes x candidates x h x w decodes of a window per image.

A code reaches the output pixels within r code cells of it (r = the decoder's ``reach``,
vqkit.models.inference.FastDecoder), and those depend only on codes within twice that radius, so each
trial decodes that window alone (clipped at the image border, where the decoder's zero padding then
matches the full decode), and the error is summed over the reachable pixels only: exact, and
independent of the image size. Inside the window each layer runs only on the cells the scored pixels
still need (``FastDecoder.decode_window``), and positions of one sweep step too far apart to share a
window are scored in one batch (``independent_groups``; under a grouped prior ``lattice_groups`` and
``window_sse_batch``, which gathers a whole group's windows as tensors).

``radius`` < r narrows the scored pixels to the cells within ``radius`` of the position, and the
decoded window with them (2 (radius + r) + 1 codes across): an approximation (the change a code makes
further out is ignored) that costs a fraction of the exact trial. On CIFAR-10 (f = 4, r = 4) radius 1
kept nearly all of the exact search's gain, radius 0 lost its distortion gain (benchmarks/search_speed.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vqkit.codec.entropy import Layout
from vqkit.data import to_float
from vqkit.priors.grouped import SCHEDULES, GroupedPrior, step_map
from vqkit.runs import Run

RATES = ("auto", "static")


@dataclass(frozen=True)
class SearchConfig:
    passes: int = 2  # raster sweeps over all positions
    candidates: int = 4  # nearest codes tried per position (the nearest included)
    lmbda: float = 2000.0  # squared error (8-bit units) a bit is worth
    rate: str = "auto"  # "auto": the prior's bits when the file is prior-coded, else static; "static"
    # cells around a position whose pixels are scored; None: all the code reaches (exact, slowest)
    radius: int | None = None

    def __post_init__(self) -> None:
        if self.radius is not None and self.radius < 0:
            raise ValueError(f"search radius must be >= 0 or None, got {self.radius}")
        if self.rate not in RATES:
            raise ValueError(f"search rate must be one of {', '.join(RATES)}, got {self.rate!r}")
        if self.passes < 1:
            raise ValueError(f"search passes must be >= 1, got {self.passes}")
        if self.candidates < 2:
            raise ValueError(f"search candidates must be >= 2, got {self.candidates}")
        if not self.lmbda >= 0:
            raise ValueError(f"search lambda must be >= 0, got {self.lmbda}")


# The search `vqkit compress` runs when no --search is given and a grouped prior codes the file: one
# pass, the 2 nearest codes, pixels scored within 1 cell. On Kodak photos with the cifar10 VQ-VAE it
# took about 4.4 s a photo on 2 CPU cores, for +0.66 dB at 1.6 % fewer bits than no search
# (benchmarks/search_speed.py --configs). Only a grouped prior makes the search this cheap: under the
# serial prior every trial walks the prior (minutes a photo), so it stays opt-in there.
DEFAULT_GROUPED = SearchConfig(passes=1, candidates=2, radius=1)


class _Shape(NamedTuple):
    """What trials must share to be decoded and scored in one batch."""

    options: int  # k, codes tried at the position
    cut: tuple[bool, bool, bool, bool]  # (top, bottom, left, right): True where cut inside the grid
    scored: tuple[int, int, int, int]  # (y0, y1, x0, x1) scored pixels within the decoded window
    window: tuple[int, ...]  # (ph, pw) codes decoded


def window_sse_many(
    run: Run,
    x: torch.Tensor,
    idx: torch.Tensor,
    trials: list[tuple[int, int, torch.Tensor]],
    radius: int | None = None,
) -> list[torch.Tensor]:
    """Squared error (8-bit units) of the pixels code (i, j) reaches, for each option at (i, j), for
    each (i, j, options) of ``trials``: options (B, k) codes to try there, the result (B, k).
    ``radius`` (None: r, the decoder's reach) narrows the scored pixels to those of the cells within
    ``radius`` cells of (i, j), and the decoded window to the codes within ``radius`` + r: cheaper,
    and for ``radius`` < r an approximation (the change a code makes further out is not counted).

    x (B, C, H, W) float images; idx (B, h, w) current codes. Each trial decodes the window of codes
    that its scored pixels depend on, apart from the others: the positions must not change each
    other's window (the caller passes positions more than 2r cells apart). Windows of the same shape
    (all of them away from the grid's edges) are decoded in one batch. Differences between options
    equal those of whole-image errors (up to float rounding): no other pixel depends on code (i, j),
    and the scored pixels depend only on the decoded window."""
    fast = run.fast_decoder
    f, r = run.model.downsample, fast.reach
    rho = r if radius is None else min(radius, r)  # scored cells around (i, j)
    (h, w), (height, width) = idx.shape[1:], x.shape[2:]
    groups: dict[_Shape, list[tuple[int, torch.Tensor, tuple[int, int, int, int]]]] = {}
    for n, (i, j, options) in enumerate(trials):
        # Window of codes decoded (p, q) and of code cells scored (e, g), clipped to the grid.
        d = rho + r
        p0, p1, q0, q1 = max(0, i - d), min(h, i + d + 1), max(0, j - d), min(w, j + d + 1)
        e0, e1, g0, g1 = max(0, i - rho), min(h, i + rho + 1), max(0, j - rho), min(w, j + rho + 1)
        y0, y1, x0, x1 = e0 * f, min(e1 * f, height), g0 * f, min(g1 * f, width)  # scored pixels
        cut = (p0 > 0, p1 < h, q0 > 0, q1 < w)
        oy, ox = (p0 + r * cut[0]) * f, (q0 + r * cut[2]) * f  # origin of the decoded pixels
        codes = idx[:, None, p0:p1, q0:q1].repeat(1, options.shape[1], 1, 1)  # (B, k, ph, pw)
        codes[:, :, i - p0, j - q0] = options
        key = _Shape(codes.shape[1], cut, (y0 - oy, y1 - oy, x0 - ox, x1 - ox), tuple(codes.shape[2:]))
        groups.setdefault(key, []).append((n, codes, (y0, y1, x0, x1)))
    out: list[torch.Tensor] = [torch.empty(0)] * len(trials)
    for key, members in groups.items():
        k, (ry0, ry1, rx0, rx1) = key.options, key.scored
        stacked = [c.flatten(0, 1) for _, c, _ in members]
        decoded = fast.decode_window(stacked[0] if len(stacked) == 1 else torch.cat(stacked), key.cut)
        decoded = decoded[..., ry0:ry1, rx0:rx1].clamp(0, 1).float()  # (G*B*k, C, sh, sw)
        pixels = [x[:, :, y0:y1, x0:x1] for _, _, (y0, y1, x0, x1) in members]
        target = pixels[0][None] if len(pixels) == 1 else torch.stack(pixels)  # (G, B, C, sh, sw)
        diff = decoded.unflatten(0, (len(members), -1, k)) - target[:, :, None]
        sse = diff.square().sum((3, 4, 5)) * 255.0**2  # (G, B, k)
        for g, (n, _, _) in enumerate(members):
            out[n] = sse[g]
    return out


def window_sse(
    run: Run, x: torch.Tensor, idx: torch.Tensor, options: torch.Tensor, i: int, j: int
) -> torch.Tensor:
    """`window_sse_many` for one position: (B, k) errors of the options (B, k) at (i, j)."""
    return window_sse_many(run, x, idx, [(i, j, options)])[0]


WINDOWS_PER_DECODE = 512  # windows decoded per call by window_sse_batch: bounds the memory of a photo's step


def window_sse_batch(
    run: Run,
    x: torch.Tensor,
    idx: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    options: torch.Tensor,
    radius: int | None = None,
) -> torch.Tensor:
    """`window_sse_many` for n positions as tensors: rows, cols (n,) int64 grid positions, options
    (B, n, k) codes to try there -> (B, n, k) squared errors. The positions must lie more than
    ``radius`` + r cells apart (none in another's window). Every window has one shape: the grid is
    padded by radius + r cells (codes -1, cells masked out: ``FastDecoder.decode_inner``) and the
    image by as many pixels (not scored), so all windows are gathered and decoded in batches without
    a per-position Python loop, and at the grid's edges they give what ``decode_window`` gives."""
    fast = run.fast_decoder
    f, r = run.model.downsample, fast.reach
    rho = r if radius is None else min(radius, r)
    d, side = rho + r, (2 * rho + 1) * f  # window half-width in codes; scored pixels across
    (h, w), (height, width), (b, n, k) = idx.shape[1:], x.shape[2:], options.shape
    padded = F.pad(idx, (d, d, d, d), value=-1)  # (B, h + 2d, w + 2d)
    # pixels of the padded grid: the image, zeros past it, and which of them are scored
    image = F.pad(x, (d * f, (w + d) * f - width, d * f, (h + d) * f - height))
    valid = torch.zeros(image.shape[2:], dtype=torch.bool, device=x.device)
    valid[d * f : d * f + height, d * f : d * f + width] = True
    off = torch.arange(-d, d + 1, device=x.device)
    wr, wc = (
        (rows[:, None] + d + off)[:, :, None],
        (cols[:, None] + d + off)[:, None, :],
    )  # (n, P, 1), (n, 1, P)
    codes = padded[:, wr, wc][:, :, None].repeat(1, 1, k, 1, 1)  # (B, n, k, P, P)
    codes[:, :, :, d, d] = options
    px = torch.arange(side, device=x.device)
    py, pxs = ((rows + d - rho) * f)[:, None] + px, ((cols + d - rho) * f)[:, None] + px  # (n, S) each
    target = image[:, :, py[:, :, None], pxs[:, None, :]].transpose(1, 2)  # (B, n, C, S, S)
    scored = valid[py[:, :, None], pxs[:, None, :]]  # (n, S, S)
    flat = codes.flatten(0, 2)  # (B*n*k, P, P)
    # (B*n*k, C, S, S): the 2 rho + 1 cells around each position
    decoded = torch.cat([fast.decode_inner(part, part >= 0) for part in flat.split(WINDOWS_PER_DECODE)])
    diff = (decoded.clamp(0, 1).float().unflatten(0, (b, n, k)) - target[:, :, None]) * scored[:, None, None]
    return diff.square().sum((3, 4, 5)) * 255.0**2


def grouped_candidate_bits(
    prior: GroupedPrior, features: torch.Tensor, options: torch.Tensor
) -> torch.Tensor:
    """Bits of candidate codes under a grouped prior: features (B, n, H) of the positions (its
    ``step_hidden`` there), options (B, n, k) codes -> (B, n, k) float32 -log2 p(hi) - log2 p(lo | hi),
    (hi, lo) = prior.split(code); the lo head runs for the k candidates' hi parts only, not all K_hi."""
    hi, lo = prior.split(options)
    hi_nats = torch.log_softmax(prior.hi_logits(features).float(), dim=-1).gather(-1, hi)  # (B, n, k)
    expanded = features[:, :, None, :].expand(*options.shape, features.shape[-1])  # (B, n, k, H)
    lo_lp = torch.log_softmax(prior.lo_logits(expanded, hi).float(), dim=-1)  # (B, n, k, K_lo)
    return -(hi_nats + lo_lp.gather(-1, lo[..., None])[..., 0]) / math.log(2)


def lattice_groups(rows: torch.Tensor, cols: torch.Tensor, reach: int, period: int) -> list[torch.Tensor]:
    """Split one grouped-prior step's positions (rows, cols (n,), raster order) into groups whose
    members lie more than ``reach`` cells apart (Chebyshev): the positions that share (row mod M,
    col mod M), M the first multiple of the schedule's ``period`` above ``reach`` (so a step, one
    lattice of that period, splits into few groups). Returns index tensors into the n positions, the
    groups in order of their residues, members in raster order."""
    m = period * -(-(reach + 1) // period)
    key = (rows % m) * m + cols % m
    return [torch.nonzero(key == value)[:, 0] for value in torch.unique(key)]


def _search_grouped(
    run: Run,
    x: torch.Tensor,
    idx: torch.Tensor,
    cand: torch.Tensor,
    prior: GroupedPrior,
    config: SearchConfig,
    progress: Callable[[int], object] | None,
) -> None:
    """The sweep under a grouped prior, updating idx (B, h, w) in place: step by step, as its coder
    walks the grid. One ``step_hidden`` call per step gives every position of the step its features
    (its context, the codes of earlier steps, is fixed during the step) and so the bits of every
    candidate; the step's positions are then scored for distortion in groups far enough apart to
    be decoded in one batch (``lattice_groups``)."""
    b, h, w = idx.shape
    r = run.fast_decoder.reach
    reach = r + (r if config.radius is None else min(config.radius, r))
    steps = torch.from_numpy(step_map(prior.config.schedule, h, w)).to(x.device)
    period = SCHEDULES[prior.config.schedule].shape[0]
    start = torch.full((b,), prior.config.num_classes, dtype=torch.long, device=x.device)  # no label
    plan = []
    for s in range(prior.steps):
        pos = torch.nonzero(steps == s)  # (n, 2), raster order
        if len(pos):
            plan.append((s, pos[:, 0], pos[:, 1], lattice_groups(pos[:, 0], pos[:, 1], reach, period)))
    for done in range(config.passes):
        changed = 0
        for s, rows, cols, groups in plan:
            options = cand[:, rows, cols]  # (B, n, k)
            features = prior.step_hidden(idx, s, start)  # (B, n, H): rows, cols in raster order
            rate = config.lmbda * grouped_candidate_bits(prior, features, options)  # (B, n, k)
            for g in groups:
                gr, gc = rows[g], cols[g]
                cost = window_sse_batch(run, x, idx, gr, gc, options[:, g], config.radius) + rate[:, g]
                best = options[:, g].gather(2, cost.argmin(2, keepdim=True))[..., 0]  # (B, m)
                changed += int((best != idx[:, gr, gc]).sum())
                idx[:, gr, gc] = best
                if progress is not None:
                    progress(b * len(g))
        if not changed:  # a fixed point: further passes would change nothing
            if progress is not None:
                progress(b * h * w * (config.passes - done - 1))
            break


def independent_groups(positions: list[tuple[int, int, int]], reach: int) -> list[list[tuple[int, int, int]]]:
    """Split one sweep step's (window, i, j) positions, in order, into groups whose members lie more than
    ``reach`` cells apart (Chebyshev): each position joins the first group it is far enough from all
    of. With reach = 2r no member's window holds another member, so a group is scored in one batch
    and gives what visiting its members one by one gives; the step then visits the groups in turn."""
    groups: list[list[tuple[int, int, int]]] = []
    for pos in positions:
        for group in groups:
            if all(max(abs(pos[1] - o[1]), abs(pos[2] - o[2])) > reach for o in group):
                group.append(pos)
                break
        else:
            groups.append([pos])
    return groups


def _sweep(
    shape: tuple[int, int], windows: list[tuple[np.ndarray, np.ndarray]] | None
) -> Iterator[list[tuple[int, int, int]]]:
    """The search's visiting order over an (h, w) grid: per step, a list of (window, i, j) grid positions.

    Without a prior (``windows`` None) one position per step, in raster order. With a prior the grid is
    cut into the coder's windows (``entropy.Layout``: (sources, coded) each) and step t visits local
    position t of every window of ``windows`` (one wave) that codes it, window by window: each window is
    then walked in its own raster order, as the coder walks it. For an 8x8 grid and an 8x8 prior both
    orders agree."""
    h, w = shape
    if windows is None:
        for i in range(h):
            for j in range(w):
                yield [(0, i, j)]
        return
    for t in range(len(windows[0][0]) if windows else 0):
        yield [(n, *divmod(int(src[t]), w)) for n, (src, coded) in enumerate(windows) if coded[t]]


class _Streams:
    """``prior.stream(n)``'s interface over n rows split into streams of at most ``rows`` each: a stream's
    key/value cache grows with its rows (a photo has hundreds of tiles), so memory stays bounded."""

    def __init__(self, prior: nn.Module, n: int, rows: int = 256) -> None:
        self.rows = rows
        self.streams = [cast(Any, prior).stream(min(rows, n - start)) for start in range(0, n, rows)]

    def logits(self) -> torch.Tensor:
        return torch.cat([stream.logits() for stream in self.streams])  # (n, K)

    def push(self, codes: torch.Tensor) -> None:
        for stream, part in zip(self.streams, codes.split(self.rows), strict=True):
            stream.push(part)


def search_grids(
    run: Run,
    images: np.ndarray,
    config: SearchConfig,
    code_bits: np.ndarray | None = None,
    progress: Callable[[int], object] | None = None,
    prior: nn.Module | None = None,
    context: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """(B, H, W, C) uint8 images of one size -> (B, h, w) int64 grids chosen by the search.

    ``code_bits`` (K,) is the rate of each code in bits (None: distortion only). ``prior`` (a CodePrior
    on the run's device, or None) replaces it with the prior's conditional bits, window by window as the
    coder cuts the grid (windows overlapping by ``context`` rows and columns, ``entropy.Layout``); a
    GroupedPrior (float32, eval mode, on the run's device) with its bits, step by step
    (``_search_grouped``; ``context`` does not apply), or with lambda = 0, where the rate plays no
    part, the distortion-only raster sweep.
    ``progress(n)`` is told of every n image-positions done (B per position; all
    passes' worth by the end)."""
    model = run.model
    with run.inference():
        x = to_float(torch.from_numpy(np.ascontiguousarray(images)).to(run.device))
        x = x.contiguous(memory_format=torch.channels_last)  # (B, C, H, W)
        k = min(config.candidates, model.codebook_size)
        cand = model.quantizer.candidates(model.encode_latents(x), k)  # (B, h, w, k)
        idx = cand[..., 0].clone()  # (B, h, w): the plain encoder's codes
        bits = None if code_bits is None else torch.as_tensor(code_bits, dtype=torch.float32, device=x.device)
        x = x.float()
        if isinstance(prior, GroupedPrior):
            if config.lmbda > 0:
                _search_grouped(run, x, idx, cand, prior, config, progress)
                return idx.cpu().numpy()
            prior = None  # no rate term: the distortion-only raster sweep
        rows = torch.arange(len(idx), device=x.device)
        reach = run.fast_decoder.reach
        scored = reach if config.radius is None else min(config.radius, reach)  # cells scored around a code
        b, h, w = idx.shape
        grid = getattr(getattr(prior, "config", None), "grid", None)
        tile = None if prior is None or grid is None else (int(grid[0]), int(grid[1]))
        # Waves of windows (entropy.Layout.waves), walked one after the other: a window's context then
        # holds this pass's choices, as the coder will see them. None: no prior, one raster walk.
        waves: list[list[tuple[np.ndarray, np.ndarray]] | None] = [None]
        if tile is not None:
            layout = Layout((h, w), tile, context)
            waves = [[layout.window(by, bx) for by, bx in wave] for wave in layout.waves()]
        for done in range(config.passes):
            changed = 0
            for wave in waves:
                # Walked along the sweep, one row per (window, image), window-major.
                stream, held = None, None
                if prior is not None and wave is not None:
                    stream = _Streams(prior, len(wave) * b)
                    held = torch.from_numpy(np.stack([src for src, _ in wave])).to(x.device)  # (T, th*tw)
                nats = None
                for step, positions in enumerate(_sweep((h, w), wave)):
                    if stream is not None and positions:  # a step of context alone needs no rates
                        nats = -torch.log_softmax(stream.logits().float(), dim=-1).unflatten(0, (-1, b))
                    for group in independent_groups(positions, reach + scored):
                        trials = [(i, j, cand[:, i, j]) for _, i, j in group]
                        costs = window_sse_many(run, x, idx, trials, config.radius)
                        for (n, i, j), cost in zip(group, costs, strict=True):  # cost (B, k)
                            if nats is not None:
                                cost = cost + config.lmbda * nats[n].gather(1, cand[:, i, j]) / math.log(2)
                            elif bits is not None:
                                cost = cost + config.lmbda * bits[cand[:, i, j]]
                            best = cand[rows, i, j, cost.argmin(1)]
                            changed += int((best != idx[:, i, j]).sum())
                            idx[:, i, j] = best
                            if progress is not None:
                                progress(b)
                    if stream is not None and held is not None:
                        # every window's code at local position ``step``: (B, T) -> (T * B,) rows
                        stream.push(idx.flatten(1)[:, held[:, step]].T.reshape(-1))
            if not changed:  # a fixed point: further passes would change nothing
                if progress is not None:
                    progress(b * h * w * (config.passes - done - 1))
                break
    return idx.cpu().numpy()
