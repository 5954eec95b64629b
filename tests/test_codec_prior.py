"""Entropy coding with an autoregressive prior: a stand-in causal model and the real CodePrior."""

from __future__ import annotations

import copy
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vqkit.codec import (
    CodecError,
    Coding,
    EntropyModel,
    compress_images,
    decode_codes,
    decode_codes_many,
    decompress,
    decompress_many,
    entropy,
    tables,
)
from vqkit.codec.api import encode_grids
from vqkit.codec.container import Mode, Record, build, parse
from vqkit.codec.entropy import PRIOR_BATCH, Layout, PriorCoder, Row, exact_torch, prior_chunks
from vqkit.priors import CodePrior, PriorConfig

from .golden.make_golden import blob_images, build_tiny_run, tiny_prior


@dataclass(frozen=True)
class StandInConfig:
    codebook_size: int
    grid: tuple[int, int]


class BigramPrior(nn.Module):
    """p(x_t | x_<t) from the previous code and the position only: causal by construction."""

    def __init__(self, codebook_size: int, grid: tuple[int, int], seed: int = 0) -> None:
        super().__init__()
        self.config = StandInConfig(codebook_size, grid)
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(2 * torch.randn(codebook_size + 1, codebook_size, generator=g))
        self.position = nn.Parameter(torch.randn(grid[0] * grid[1], codebook_size, generator=g))

    def logits(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        flat = indices.reshape(len(indices), -1)
        start = torch.full((len(indices), 1), self.config.codebook_size, dtype=torch.long)
        return self.table[torch.cat([start, flat[:, :-1]], dim=1)] + self.position  # (B, T, K)


class AbovePrior(nn.Module):
    """p(x_t | x_<t) puts nearly all mass on the code directly above t in the window (uniform on the
    window's first row): a stand-in for the vertical correlation of real code grids."""

    def __init__(self, codebook_size: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.config = StandInConfig(codebook_size, grid)
        self.strength = nn.Parameter(torch.tensor(30.0))

    def logits(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        b, h, w = indices.shape
        k = self.config.codebook_size
        out = torch.zeros(b, h * w, k, dtype=self.strength.dtype)
        out[:, w:] = F.one_hot(indices.reshape(b, -1)[:, :-w], k).to(out.dtype) * self.strength
        return out


def test_overlapping_windows_carry_the_context_that_tiles_lose(run: Path) -> None:
    """A 12x12 grid whose columns are constant, under a 4x4 prior that predicts the code above: in
    tiles every tile's first row costs log2(K) bits a code (9 tiles x 4 codes x 4 bits = 144); in
    overlapping windows only the grid's first row does (12 x 4 = 48), every later window row having
    the row above as context. Both decode back."""
    coding = Coding(run, AbovePrior(16, (4, 4)))
    grid = np.tile(np.random.default_rng(3).integers(0, 16, 12), (12, 1))
    bits = {}
    for model in (EntropyModel.PRIOR, EntropyModel.PRIOR_OVERLAP):
        payloads, [bits[model]] = encode_grids(coding, [grid], model)
        [back] = coding.require_prior(model).decode(payloads, [(12, 12)])
        np.testing.assert_array_equal(back, grid)
    assert bits[EntropyModel.PRIOR] == pytest.approx(144, abs=0.5)
    assert bits[EntropyModel.PRIOR_OVERLAP] == pytest.approx(48, abs=0.5)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_run(tmp_path_factory.mktemp("prior") / "run")


def _grids(coding: Coding, images: list[np.ndarray]) -> list[np.ndarray]:
    return coding.run.encode(images)


@pytest.mark.parametrize("archive", [True, False])
def test_prior_round_trip_is_bit_exact(run: Path, archive: bool) -> None:
    prior = BigramPrior(16, (4, 4))
    images = blob_images(PRIOR_BATCH + 5, (16, 16), 3)  # more than one chunk
    coding = Coding(run, prior)
    result = compress_images(coding, images, entropy_model="prior", archive=archive, quality=False)
    assert result.entropy_model == "prior"
    assert parse(result.files[0]).entropy_model is EntropyModel.PRIOR_OVERLAP
    decoded = [g for f in result.files for g in decode_codes(Coding(run, prior), f)[1]]
    for got, want in zip(decoded, _grids(coding, images), strict=True):
        np.testing.assert_array_equal(got, want)


def test_prior_estimate_matches_file_payload_within_one_percent(run: Path) -> None:
    prior = BigramPrior(16, (16, 16), seed=1)
    images = blob_images(24, (64, 64), 4)
    result = compress_images(run, images, entropy_model="prior", prior=prior, archive=True, quality=False)
    summary = result.summary()
    assert abs(summary["codes_overhead"]) < 0.01, summary  # file payload bits vs sum of -log2 p


def test_auto_tries_the_prior_first_when_the_run_has_one(run: Path) -> None:
    coding = Coding(run, BigramPrior(16, (4, 4)))
    prior, static, raw = EntropyModel.PRIOR_OVERLAP, EntropyModel.STATIC, EntropyModel.RAW
    assert coding.candidates("auto") == [prior, static, raw]
    assert coding.candidates("prior-tiles") == [EntropyModel.PRIOR]
    assert Coding(run).candidates("auto") == [static, raw]  # no prior


@pytest.mark.parametrize("model", ["prior", "prior-tiles"])
@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("archive", [True, False])
def test_grids_of_any_shape_round_trip(run: Path, streaming: bool, archive: bool, model: str) -> None:
    """Grids larger, smaller and not a multiple of the prior's (4, 4): 5x4, 2x2, 20x16 (20 tiles: two
    groups; or 9 x 7 overlapping windows in 15 waves), 9x7; decoded alone, together and from an archive,
    in tiles or overlapping windows, every code comes back."""
    prior = tiny_prior(16, (4, 4), seed=12) if streaming else BigramPrior(16, (4, 4), seed=2)
    sizes = [(20, 16), (8, 8), (80, 64), (36, 28), (16, 16)]
    images = [blob_images(1, size, 20 + n)[0] for n, size in enumerate(sizes)]
    coding = Coding(run, prior)
    files = compress_images(coding, images, entropy_model=model, archive=archive, quality=False).files
    want = _grids(coding, images[:1]) + [g for im in images[1:] for g in _grids(coding, [im])]
    assert [g.shape for g in want] == [(5, 4), (2, 2), (20, 16), (9, 7), (4, 4)]
    together = [g for _, grids in decode_codes_many(Coding(run, prior), files) for g in grids]
    alone = [g for f in files for g in decode_codes(Coding(run, prior), f)[1]]
    for a, b, w in zip(together, alone, want, strict=True):
        np.testing.assert_array_equal(a, w)
        np.testing.assert_array_equal(b, w)


def _coded(coder: PriorCoder, grids: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each grid's (symbols, tables) in coding order, its segments joined."""
    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    lasts = []
    for i, symbols, tabs, last in coder.segments(grids):
        parts.setdefault(i, []).append((symbols, tabs))
        lasts += [i] if last else []
    assert lasts == list(range(len(grids)))  # each image ends once, in order
    return [
        (np.concatenate([s for s, _ in parts[i]]), np.concatenate([t for _, t in parts[i]])) for i in lasts
    ]


def test_a_big_grid_is_coded_as_independent_tiles() -> None:
    """An 8x8 grid under a (4, 4) prior is its four 4x4 tiles, each with the tables it gets as a grid
    of its own, coded position-major across the tiles; a grid of the prior's shape is coded in raster
    order (as files written before tiling were)."""
    coder = PriorCoder(tiny_prior(16, (4, 4), seed=13).eval(), 16)
    grid = np.random.default_rng(1).integers(0, 16, (8, 8))
    tiles = [grid[y : y + 4, x : x + 4] for y in (0, 4) for x in (0, 4)]
    [(symbols, tabs)] = _coded(coder, [grid])
    alone = _coded(coder, tiles)
    assert [s.tolist() for s, _ in alone] == [t.reshape(-1).tolist() for t in tiles]
    np.testing.assert_array_equal(symbols, np.stack([t.reshape(-1) for t in tiles], axis=1).reshape(-1))
    np.testing.assert_array_equal(tabs, np.stack([t for _, t in alone], axis=1).reshape(-1, 16))


def test_padding_positions_are_not_coded() -> None:
    """A 5x3 grid under a (4, 4) prior: two tiles, 15 symbols (not 32): position-major across the
    tiles, each position only where it lies inside the grid."""
    coder = PriorCoder(tiny_prior(16, (4, 4), seed=14).eval(), 16)
    grid = np.arange(15).reshape(5, 3)
    [(symbols, tabs)] = _coded(coder, [grid])
    assert tabs.shape == (15, 16)
    top, bottom = grid[:4], grid[4:]
    want = [
        int(tile[r, c])
        for r in range(4)
        for c in range(4)
        for tile in (top, bottom)
        if r < tile.shape[0] and c < tile.shape[1]
    ]
    assert symbols.tolist() == want
    assert want[:6] == [0, 12, 1, 13, 2, 14]


def test_another_prior_cannot_decode(run: Path) -> None:
    images = blob_images(2, (16, 16), 7)
    prior = BigramPrior(16, (4, 4), seed=0)
    data = compress_images(run, images, entropy_model="prior", prior=prior, archive=True).files[0]
    with pytest.raises(CodecError, match="another model"):
        decode_codes(run, data, prior=BigramPrior(16, (4, 4), seed=1))


def test_the_callers_prior_is_left_as_it_was(run: Path) -> None:
    prior = BigramPrior(16, (4, 4))
    compress_images(run, blob_images(1, (16, 16), 8), prior=prior, quality=False)
    assert prior.table.dtype == torch.float32


def _rows(chunks: list[list[Row]]) -> list[list[tuple[int, int, int]]]:
    return [[(row.image, row.by, row.bx) for row in chunk] for chunk in chunks]


def test_chunks_follow_file_order_and_grid_shape() -> None:
    shapes = [(4, 4)] * (PRIOR_BATCH + 1) + [(2, 2), (4, 4)]
    rows = [[(i, 0, 0) for i in chunk] for chunk in ([*range(PRIOR_BATCH)], [16], [17], [18])]
    assert _rows(list(prior_chunks(shapes))) == rows
    # with the prior's (4, 4) tiles every grid is one or more tiles of one shape: groups pack together
    assert _rows(list(prior_chunks(shapes, (4, 4)))) == [
        [(i, 0, 0) for i in range(PRIOR_BATCH)],
        [(16, 0, 0), (17, 0, 0), (18, 0, 0)],
    ]


def test_chunks_never_split_an_images_group_of_tiles() -> None:
    """20 tiles: a group of 16 and one of 4; the 4 share a chunk with the next image but not the 16."""
    chunks = list(prior_chunks([(4, 4), (20, 16), (8, 4)], (4, 4)))
    assert _rows(chunks) == [
        [(0, 0, 0)],
        [(1, j // 4, j % 4) for j in range(16)],
        [(1, 4, j) for j in range(4)] + [(2, 0, 0), (2, 1, 0)],
    ]
    assert [row.last for row in chunks[2]] == [False, False, False, True, False, True]


def test_overlapping_windows_go_by_waves_and_an_image_once_per_chunk() -> None:
    """A 6x8 grid under a (4, 4) prior with 2 rows and columns of context: windows at a stride of 2,
    2 x 3 of them, coded by anti-diagonals (a window's context lies above and to its left, in earlier
    diagonals); a chunk never holds two of an image's groups, so a wave waits for the one before it,
    while another image's windows may share the chunk."""
    chunks = list(prior_chunks([(6, 8), (4, 4)], (4, 4), (2, 2)))
    assert _rows(chunks) == [
        [(0, 0, 0)],
        [(0, 0, 1), (0, 1, 0)],
        [(0, 0, 2), (0, 1, 1)],
        [(0, 1, 2), (1, 0, 0)],
    ]
    assert [row.last for chunk in chunks for row in chunk] == [False] * 5 + [True, True]


def test_overlapping_windows_code_each_position_once_with_context() -> None:
    """Layout of a 6x5 grid, (4, 4) windows, context (2, 2): every grid position is coded by exactly one
    window; a window's other positions hold codes coded before it (in earlier waves) or padding."""
    layout = Layout((6, 5), (4, 4), (2, 2))
    assert layout.counts == (2, 2)
    owner = np.full(30, -1)
    order = [(by, bx) for wave in layout.waves() for by, bx in wave]
    for n, (by, bx) in enumerate(order):
        sources, coded = layout.window(by, bx)
        assert (owner[sources[coded]] == -1).all()
        for t in np.flatnonzero(~coded):  # context coded by an earlier window, or padding: a copy of
            mine = np.flatnonzero(coded & (sources == sources[t]))  # a code this window coded before
            assert owner[sources[t]] >= 0 or (len(mine) == 1 and mine[0] < t), (by, bx, t)
        owner[sources[coded]] = n
    assert (owner >= 0).all()
    assert layout.window(1, 1)[0].reshape(4, 4)[0].tolist() == [12, 13, 14, 14]  # row 2, cols 2..4, pad


def test_an_overlapping_window_is_predicted_from_the_codes_left_of_it() -> None:
    """A 4x6 grid, (4, 4) prior, context 2: window (0, 1) covers columns 2..5 and codes columns 4..5
    after window (0, 0) has coded columns 0..3; its tables are those the prior gives that 4x4 window
    as a grid of its own (columns 2..3 as context)."""
    prior = tiny_prior(16, (4, 4), seed=15).eval()
    grid = np.random.default_rng(2).integers(0, 16, (4, 6))
    [(symbols, tabs)] = _coded(PriorCoder(prior, 16, overlap=True), [grid])
    [(_, first)] = _coded(PriorCoder(prior, 16), [np.ascontiguousarray(grid[:, 0:4])])
    [(_, second)] = _coded(PriorCoder(prior, 16), [np.ascontiguousarray(grid[:, 2:6])])
    assert symbols.tolist() == grid[:, 0:4].reshape(-1).tolist() + grid[:, 4:6].reshape(-1).tolist()
    np.testing.assert_array_equal(tabs[:16], first)
    np.testing.assert_array_equal(tabs[16:], second.reshape(4, 4, 16)[:, 2:].reshape(8, 16))


def test_real_prior_rows_ignore_later_positions_bitwise() -> None:
    """What decoding relies on: row t of the CodePrior's logits never sees positions >= t."""
    prior = tiny_prior(16, (4, 4), seed=3).double()
    grids = torch.randint(0, 16, (5, 4, 4), generator=torch.Generator().manual_seed(0))
    with exact_torch():
        full = prior.logits(grids)
        for t in range(16):
            partial = grids.clone().reshape(5, -1)
            partial[:, t:] = 0
            assert torch.equal(prior.logits(partial.reshape(5, 4, 4))[:, t], full[:, t])


def test_real_prior_round_trip(run: Path) -> None:
    prior = tiny_prior(16, (4, 4), seed=4)
    images = blob_images(6, (16, 16), 9)
    result = compress_images(run, images, entropy_model="prior", prior=prior, archive=True, quality=False)
    coding = Coding(run, prior)
    _, decoded = decode_codes(coding, result.files[0])
    for got, want in zip(decoded, _grids(coding, images), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_calibrated_prior_is_another_model(run: Path) -> None:
    """The logit scale is part of the model: a file coded with a calibrated prior decodes with it, and
    the uncalibrated prior refuses it instead of decoding garbage."""
    prior = tiny_prior(16, (4, 4), seed=5)
    calibrated = copy.deepcopy(prior)
    calibrated.logit_scale.fill_(0.8)
    images = blob_images(3, (16, 16), 10)
    data = compress_images(run, images, entropy_model="prior", prior=calibrated, archive=True).files[0]
    _, decoded = decode_codes(run, data, prior=calibrated)
    for got, want in zip(decoded, Coding(run).run.encode(images), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(CodecError, match="another model"):
        decode_codes(run, data, prior=prior)


def _seen_logits(monkeypatch: pytest.MonkeyPatch, coder: PriorCoder, grids: list[np.ndarray]) -> np.ndarray:
    """The float64 logits the coder turns into tables while coding ``grids``: (n, h*w, K)."""
    seen: list[np.ndarray] = []

    def record(logits: np.ndarray) -> np.ndarray:
        seen.append(np.array(logits, copy=True))
        return tables.frequencies_from_logits(logits)

    monkeypatch.setattr(entropy, "frequencies_from_logits", record)
    list(coder.segments(grids))
    monkeypatch.undo()
    return np.stack(seen, axis=1)  # one (n, K) array per position


def test_a_grids_logits_ignore_its_batch_neighbours_bitwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files coded together decode alone, and the reverse, only if a grid's float logits do not depend
    on how many grids share its batch, which rows they hold or its row. BLAS rounds differently for
    different batch sizes (a batch of 1 and of 16 differ in the last bits), hence padded batches."""
    config = PriorConfig(codebook_size=64, grid=(4, 4), width=64, layers=2, heads=4)
    torch.manual_seed(0)
    coder = PriorCoder(CodePrior(config).eval(), 64)
    with torch.no_grad():
        for p in coder.prior.parameters():
            p.normal_(0.0, 0.2)
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 64, (4, 4)) for _ in range(PRIOR_BATCH)]
    alone = _seen_logits(monkeypatch, coder, grids[:1])[0]
    for count in (2, 7, PRIOR_BATCH):
        batch = [grids[(i + count) % PRIOR_BATCH] for i in range(count - 1)] + grids[:1]
        together = _seen_logits(monkeypatch, coder, batch)[count - 1]
        assert np.array_equal(together, alone), count


def test_many_files_decode_together_as_one_by_one(run: Path) -> None:
    prior = tiny_prior(16, (4, 4), seed=6)
    images = blob_images(PRIOR_BATCH + 3, (16, 16), 11)
    coding = Coding(run, prior)
    files = compress_images(coding, images, entropy_model="prior", quality=False).files
    files.append(compress_images(coding, images[:5], entropy_model="static", archive=True).files[0])
    together = decode_codes_many(coding, files)
    want = _grids(coding, images)
    for (_, got), data in zip(together, files, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(got, decode_codes(coding, data)[1], strict=True))
    got = [g for _, grids in together for g in grids]
    for a, b in zip(got, want + want[:5], strict=True):
        np.testing.assert_array_equal(a, b)
    pixels = decompress_many(coding, files)
    assert [len(p) for p in pixels] == [1] * len(images) + [5]
    for many, data in zip(pixels, files, strict=True):
        for a, b in zip(many, decompress(coding, data), strict=True):
            assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_decode_progress_counts_every_code_once(run: Path) -> None:
    """The progress callback sees each decoded code once: padding positions and padding rows are not
    counted, and a grid of 20 tiles reports in more than one step."""
    prior = tiny_prior(16, (4, 4), seed=15)
    images = [blob_images(1, size, 40 + n)[0] for n, size in enumerate([(80, 64), (20, 16), (16, 16)])]
    coding = Coding(run, prior)
    files = compress_images(coding, images, entropy_model="prior", quality=False).files
    steps: list[int] = []
    decompress_many(coding, files, progress=steps.append)
    assert sum(steps) == 20 * 16 + 5 * 4 + 4 * 4 and len(steps) > 1


def test_a_header_claiming_huge_prior_images_fails_fast(run: Path) -> None:
    """300 images of 4096x4096 pixels (65,536 tiles each) with empty payloads: the first image's codes
    run out and decoding stops with a CodecError, without listing every tile or allocating every grid
    first (that would be 20 million rows and 2.5 GB)."""
    prior = tiny_prior(16, (4, 4), seed=16)
    coding = Coding(run, prior)
    records = [Record(4096, 4096, Mode.RGB, 0)] * 300
    data = build(EntropyModel.PRIOR, coding.fingerprint(EntropyModel.PRIOR), records, [b""] * 300)
    start = time.perf_counter()
    with pytest.raises(CodecError, match="corrupt codes payload"):
        decompress(coding, data)
    assert time.perf_counter() - start < 10


def test_threads_change_neither_the_tables_nor_the_decoded_codes(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder evaluates chunks side by side and the decoder deals images into lanes, one thread
    each: every table, symbol and decoded code equals the one-thread walk's, and every evaluation in a
    worker runs on one intra-op thread (what keeps the floats identical on any machine)."""
    coding = Coding(run, tiny_prior(16, (4, 4), seed=21))
    rng = np.random.default_rng(21)
    shapes = [(4, 4), (11, 9), (4, 4), (6, 14), (3, 5), (9, 9)] + [(4, 4)] * PRIOR_BATCH
    grids = [rng.integers(0, 16, s) for s in shapes]
    coder = coding.require_prior(EntropyModel.PRIOR_OVERLAP)
    seen: list[tuple[int, int]] = []  # (thread id, intra-op threads) of every prior step
    step_tables = PriorCoder._step_tables

    def spy(self: PriorCoder, stream: object, n: int) -> np.ndarray:
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return step_tables(self, stream, n)

    monkeypatch.setattr(PriorCoder, "_step_tables", spy)
    one = list(coder.segments(grids, threads=1))
    many = list(coder.segments(grids, threads=3))
    assert len(one) == len(many)
    for a, b in zip(one, many, strict=True):
        assert a[0] == b[0] and a[3] == b[3]
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])
    payloads, _ = encode_grids(coding, grids, EntropyModel.PRIOR_OVERLAP)
    seen.clear()
    for threads in (1, 3):
        back = coder.decode(payloads, shapes, threads=threads)
        for got, want in zip(back, grids, strict=True):
            np.testing.assert_array_equal(got, want)
    assert len({ident for ident, _ in seen}) > 2  # the lanes really ran on threads of their own
    assert {count for _, count in seen} == {1}


def test_a_corrupt_image_in_one_lane_stops_all_lanes(run: Path) -> None:
    """One empty payload among many decoded in lanes: one CodecError, and the other lanes give
    up at their next chunk instead of decoding on."""
    coding = Coding(run, tiny_prior(16, (4, 4), seed=22))
    rng = np.random.default_rng(22)
    shapes = [(64, 64)] * 4
    grids = [rng.integers(0, 16, s) for s in shapes]
    payloads, _ = encode_grids(coding, grids, EntropyModel.PRIOR_OVERLAP)
    payloads[1] = b""  # no codes at all
    steps: list[int] = []
    with pytest.raises(CodecError, match="corrupt codes payload"):
        coding.require_prior(EntropyModel.PRIOR_OVERLAP).decode(payloads, shapes, steps.append, threads=2)
    assert sum(steps) < 64 * 64  # not even one of the good images (a lane holds two)


def test_cli_threads_leave_the_files_and_images_unchanged(run: Path, tmp_path: Path) -> None:
    """`vqkit compress/decompress --threads`: the same archive bytes and the same PNGs from one thread
    as from three; a count below 1 is refused. (torch's thread count is restored afterwards: the CLI
    sets it for the whole process.)"""
    from PIL import Image

    from vqkit.cli import main
    from vqkit.priors import save_prior

    prior_run = tmp_path / "run"
    shutil.copytree(run, prior_run)
    save_prior(prior_run, tiny_prior(16, (4, 4), seed=23))
    folder = tmp_path / "images"
    folder.mkdir()
    for n, image in enumerate(blob_images(5, (40, 36), 23)):
        Image.fromarray(image).save(folder / f"{n}.png")
    before = torch.get_num_threads()
    try:
        out: dict[int, tuple[bytes, list[bytes]]] = {}
        for threads in (1, 3):
            archive, pngs = tmp_path / f"t{threads}.vqk", tmp_path / f"png{threads}"
            args = ["--threads", str(threads), "--no-progress"]
            model = ["--entropy-model", "prior"]
            assert (
                main(
                    ["compress", str(prior_run), str(folder), "-o", str(archive), "--archive", *model, *args]
                )
                == 0
            )
            assert main(["decompress", str(archive), "-o", str(pngs), "--run", str(prior_run), *args]) == 0
            out[threads] = archive.read_bytes(), [p.read_bytes() for p in sorted(pngs.iterdir())]
        assert parse(out[1][0]).entropy_model is EntropyModel.PRIOR_OVERLAP
        assert out[1] == out[3] and len(out[1][1]) == 5
        with pytest.raises(SystemExit):
            main(
                [
                    "decompress",
                    str(archive),
                    "-o",
                    str(tmp_path / "x"),
                    "--run",
                    str(prior_run),
                    "--threads",
                    "0",
                ]
            )
    finally:
        torch.set_num_threads(before)


def test_a_stream_skips_the_output_layer_where_no_logits_are_asked() -> None:
    """Context and padding positions are pushed without their logits: the stream then runs no output
    layer there, and the logits asked for later are bitwise those of a walk that asked at every step."""
    prior = tiny_prior(16, (4, 4), seed=24).double().eval()
    codes = torch.randint(0, 16, (3, 16), generator=torch.Generator().manual_seed(24))
    heads: list[int] = []
    prior.head.register_forward_hook(lambda *_: heads.append(1))
    with exact_torch():
        every, some = prior.stream(3), prior.stream(3)
        for t in range(16):
            full = every.logits()
            if t % 3 == 0:
                assert torch.equal(some.logits(), full)
            every.push(codes[:, t])
            some.push(codes[:, t])
    assert len(heads) == 16 + 6  # every step of the first walk, steps 0, 3, ..., 15 of the second
