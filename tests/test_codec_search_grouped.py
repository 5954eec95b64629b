"""Encoder-side code search with a grouped prior as the rate: step order, J never above the plain
encoder's, lambda = 0, the candidates' bits against ``log_probs``, batching, compress wiring."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vqkit.codec import Coding, compress_images
from vqkit.codec.search import (
    SearchConfig,
    grouped_candidate_bits,
    lattice_groups,
    search_grids,
    window_sse_batch,
    window_sse_many,
)
from vqkit.config import ModelConfig, QuantizerConfig, RunConfig
from vqkit.data import to_float
from vqkit.models import VQVAE
from vqkit.priors import PriorConfig
from vqkit.priors.checkpoint import save_prior
from vqkit.priors.grouped import GroupedPrior, step_map
from vqkit.runs import Run

from . import test_codec_search as base
from .golden.make_golden import blob_images

# the codec search tests' trained tiny run (module fixtures) and their squared error
run_dir, run, _sse = base.run_dir, base.run, base._sse


def grouped_prior(codebook_size: int, seed: int, schedule: str = "2x2") -> GroupedPrior:
    """A tiny GroupedPrior with random, peaked outputs (K = 16: a 4 x 4 two-part head)."""
    torch.manual_seed(seed)
    cfg = PriorConfig(codebook_size=codebook_size, grid=(4, 4), kind="grouped", width=16, layers=2,
                      embed_dim=4, radius=1, schedule=schedule)  # fmt: skip
    prior = GroupedPrior(cfg)
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0.0, 0.5)
    return prior.float().eval()


def _j(run: Run, prior: GroupedPrior, images: np.ndarray, grids: np.ndarray, lmbda: float) -> np.ndarray:
    """Per-image J = squared error (8-bit units) + lambda * bits under the prior's float rate."""
    with torch.no_grad():
        bits = prior.nll_bits(torch.from_numpy(grids)).double().numpy()
    return _sse(run, images, grids) + lmbda * bits


def test_the_search_walks_the_steps_in_order_and_never_raises_j(run: Run) -> None:
    images = np.stack(blob_images(6, (24, 20), 21))
    prior = grouped_prior(run.model.codebook_size, seed=1)
    seen: list[int] = []
    hidden = prior.step_hidden

    def recording(known: torch.Tensor, step: int, start_ids: torch.Tensor) -> torch.Tensor:
        seen.append(step)
        return hidden(known, step, start_ids)

    prior.step_hidden = recording  # type: ignore[method-assign]
    lmbda = 300.0
    searched = search_grids(run, images, SearchConfig(3, 4, lmbda), None, None, prior)
    assert len(seen) >= 4 and len(seen) % 4 == 0
    assert seen == [0, 1, 2, 3] * (len(seen) // 4)  # each pass: the steps in coding order
    plain = np.stack(run.encode(list(images)))
    before, after = _j(run, prior, images, plain, lmbda), _j(run, prior, images, searched, lmbda)
    assert np.all(after <= before * (1 + 1e-6))
    assert after.sum() < 0.97 * before.sum()  # and it does lower J
    with torch.no_grad():  # the rate took part: fewer bits than the distortion-only search's codes
        free = search_grids(run, images, SearchConfig(3, 4, 0.0))
        assert prior.nll_bits(torch.from_numpy(searched)).sum() < prior.nll_bits(torch.from_numpy(free)).sum()


def test_with_lambda_zero_the_prior_plays_no_part(run: Run) -> None:
    images = np.stack(blob_images(4, (16, 16), 22))
    prior = grouped_prior(run.model.codebook_size, seed=2)
    with_prior = search_grids(run, images, SearchConfig(2, 4, 0.0), None, None, prior)
    np.testing.assert_array_equal(with_prior, search_grids(run, images, SearchConfig(2, 4, 0.0)))


def test_a_candidates_bits_are_its_joint_probability_under_log_probs(run: Run) -> None:
    prior = grouped_prior(run.model.codebook_size, seed=3)
    k = run.model.codebook_size
    grid = torch.randint(0, k, (3, 6, 5))
    start = torch.full((3,), prior.config.num_classes)
    steps = torch.from_numpy(step_map("2x2", 6, 5))
    with torch.no_grad():
        for s in range(4):
            rows, cols = torch.nonzero(steps == s).T
            features = prior.step_hidden(grid, s, start)  # (3, n, H): rows, cols in raster order
            options = torch.randint(0, k, (3, len(rows), 5))
            got = grouped_candidate_bits(prior, features, options)
            want = -prior.log_probs(features).gather(-1, options) / math.log(2)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
            # and log_probs at those positions is what the prior's logits give them, so the coder's
            assert torch.allclose(
                prior.log_probs(features), prior.logits(grid).view(3, 30, k)[:, rows * 5 + cols]
            )


def test_with_a_huge_lambda_each_step_keeps_the_candidate_the_prior_finds_likeliest(run: Run) -> None:
    """One pass: a step's context (earlier steps' codes) is final once the step is visited, so
    replaying the steps over the result must find every chosen code the likeliest candidate."""
    images = np.stack(blob_images(4, (24, 20), 23))
    prior = grouped_prior(run.model.codebook_size, seed=4)
    chosen = torch.from_numpy(search_grids(run, images, SearchConfig(1, 4, 1e9), None, None, prior))
    with run.inference():
        x = to_float(torch.from_numpy(images))
        cand = run.model.quantizer.candidates(run.model.encode_latents(x), 4)  # (4, 6, 5, 4)
    steps = torch.from_numpy(step_map("2x2", 6, 5))
    start = torch.full((4,), prior.config.num_classes)
    with torch.no_grad():
        for s in range(4):
            rows, cols = torch.nonzero(steps == s).T
            lp = prior.log_probs(prior.step_hidden(chosen, s, start))  # (4, n, K)
            options = cand[:, rows, cols]
            best = options.gather(2, lp.gather(2, options).argmax(2, keepdim=True))[..., 0]
            assert torch.equal(chosen[:, rows, cols], best), s


def test_a_batch_of_images_gives_the_grids_of_one_at_a_time(run: Run) -> None:
    images = np.stack(blob_images(3, (20, 24), 24))
    prior = grouped_prior(run.model.codebook_size, seed=5)
    config = SearchConfig(2, 3, 500.0)
    together = search_grids(run, images, config, None, None, prior)
    alone = np.concatenate([search_grids(run, im[None], config, None, None, prior) for im in images])
    np.testing.assert_array_equal(together, alone)


@pytest.mark.parametrize("radius", [None, 0, 1])
def test_batched_windows_score_like_one_window_at_a_time(run: Run, radius: int | None) -> None:
    """window_sse_batch gathers the windows inside the grid as tensors and sends edge ones through
    window_sse_many: a step's lattice group scored both ways agrees, inside and at the edges."""
    r = run.fast_decoder.reach
    images = np.stack(blob_images(2, (118, 114), 25))  # the last row and column of cells part-filled
    reach = r + (r if radius is None else radius)
    steps = torch.from_numpy(step_map("2x2", 30, 29))
    rows, cols = torch.nonzero(steps == 1).T
    groups = lattice_groups(rows, cols, reach, 2)
    assert sorted(torch.cat(groups).tolist()) == list(range(len(rows)))
    with run.inference():
        x = to_float(torch.from_numpy(images))
        idx = torch.randint(0, run.model.codebook_size, (2, 30, 29))
        for g in groups[:3]:
            gr, gc = rows[g], cols[g]
            gap = (gr[:, None] - gr[None]).abs().maximum((gc[:, None] - gc[None]).abs())
            assert int((gap + 1000 * torch.eye(len(g), dtype=torch.long)).min()) > reach  # members far apart
            options = torch.randint(0, run.model.codebook_size, (2, len(g), 3))
            batched = window_sse_batch(run, x, idx, gr, gc, options, radius)
            trials = [(int(i), int(j), options[:, t]) for t, (i, j) in enumerate(zip(gr, gc, strict=True))]
            one_by_one = torch.stack(window_sse_many(run, x, idx, trials, radius), 1)
            torch.testing.assert_close(batched, one_by_one, atol=0.5, rtol=1e-5)


def test_compress_searches_with_the_runs_grouped_prior(run_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    loaded = Run.load(folder, precision="fp32")
    prior = grouped_prior(loaded.model.codebook_size, seed=6)
    save_prior(folder, prior)
    images = blob_images(3, (16, 16), 26)
    config = SearchConfig(1, 4, 5000.0)
    coding = Coding(loaded)
    searched = search_grids(loaded, np.stack(images), config, coding.static_bits(), None, prior)
    static = search_grids(loaded, np.stack(images), config, coding.static_bits())
    assert not np.array_equal(searched, static)  # the two rates pick differently here
    auto = compress_images(coding, images, search=config, quality=False)
    np.testing.assert_array_equal(np.stack(auto.grids), searched)
    rate_static = compress_images(coding, images, search=SearchConfig(1, 4, 5000.0, "static"), quality=False)
    np.testing.assert_array_equal(np.stack(rate_static.grids), static)


@pytest.mark.parametrize(("f", "blocks"), [(4, 2), (2, 1), (8, 0)])
def test_decode_inner_is_decode_window_cut_on_every_side(f: int, blocks: int) -> None:
    """The unpadded decode of a window cut on all sides gives decode_window's pixels, with residual
    blocks (whose convolutions then run unpadded) and without."""
    torch.manual_seed(f + blocks)
    cfg = ModelConfig(channels=16, res_channels=8, res_blocks=blocks, downsample=f,
                      quantizer=QuantizerConfig(codebook_size=32, code_dim=4))  # fmt: skip
    fast = Run(Path("."), RunConfig(model=cfg), VQVAE(cfg).eval(), torch.device("cpu"), {}, precision="fp32")
    r = fast.fast_decoder.reach
    for side in (2 * r + 1, 2 * r + 3):
        idx = torch.randint(0, 32, (5, side, side + 1))
        with torch.inference_mode():
            want = fast.fast_decoder.decode_window(idx, (True, True, True, True))
            got = fast.fast_decoder.decode_inner(idx)
        assert got.shape == want.shape == (5, 3, (side - 2 * r) * f, (side + 1 - 2 * r) * f)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no cell"):
        fast.fast_decoder.decode_inner(torch.zeros(1, 2 * r, 2 * r + 1, dtype=torch.long))


@pytest.mark.parametrize(("f", "blocks"), [(4, 2), (2, 1)])
def test_decode_inner_over_the_grids_edge_gives_the_whole_decode(f: int, blocks: int) -> None:
    """A window overhanging a corner of the grid (codes -1 and ``inside`` False there) decodes the
    cells inside as the whole grid does: the masks stand in for the decoder's zero padding."""
    torch.manual_seed(10 * f + blocks)
    cfg = ModelConfig(channels=16, res_channels=8, res_blocks=blocks, downsample=f,
                      quantizer=QuantizerConfig(codebook_size=32, code_dim=4))  # fmt: skip
    fast = Run(Path("."), RunConfig(model=cfg), VQVAE(cfg).eval(), torch.device("cpu"), {}, precision="fp32")
    decoder = fast.fast_decoder
    r = decoder.reach
    h, w, d = 3 * r + 2, 3 * r + 1, r + 1  # the window: codes within d of the cell scored
    grid = torch.randint(0, 32, (2, h, w))
    padded = torch.nn.functional.pad(grid, (d, d, d, d), value=-1)
    with torch.inference_mode():
        whole = decoder(grid)  # (2, 3, h f, w f)
        for i, j in [(0, 0), (h - 1, w - 1), (1, w - 2), (h // 2, 0)]:
            window = padded[:, i : i + 2 * d + 1, j : j + 2 * d + 1]
            got = decoder.decode_inner(window, window >= 0)  # the 3 x 3 cells around (i, j)
            for di in range(-1, 2):
                for dj in range(-1, 2):
                    y, x = i + di, j + dj
                    if 0 <= y < h and 0 <= x < w:
                        cell = got[..., (di + 1) * f : (di + 2) * f, (dj + 1) * f : (dj + 2) * f]
                        want = whole[..., y * f : (y + 1) * f, x * f : (x + 1) * f]
                        torch.testing.assert_close(cell, want, atol=1e-5, rtol=1e-5)
