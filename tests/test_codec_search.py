"""Encoder-side code search: exact windows, never worse than nearest codes, rate term, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vqkit.cli import main
from vqkit.codec import Coding, compress_images, decompress, fit_static_model, parse, resample
from vqkit.codec.search import (
    SearchConfig,
    independent_groups,
    search_grids,
    window_sse,
    window_sse_many,
)
from vqkit.config import ModelConfig, QuantizerConfig, RunConfig
from vqkit.data import to_float, to_uint8_hwc
from vqkit.models import VQVAE
from vqkit.runs import Run, load_model, save_model

from .golden.make_golden import blob_images, build_tiny_run, tiny_prior


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The codec tests' tiny run, its decoder trained for a few steps so that codes matter to it."""
    path = build_tiny_run(tmp_path_factory.mktemp("search") / "run")
    model = load_model(path).train()
    torch.manual_seed(0)
    x = to_float(torch.from_numpy(np.stack(blob_images(64, (16, 16), 3))))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):  # about a second; 17.5 dB on its training images
        loss = model(x).losses["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_model(path, model.eval())  # the static table keys on the weights: refit it
    fit_static_model(path, blob_images(128, (16, 16), 1))
    return path


@pytest.fixture(scope="module")
def run(run_dir: Path) -> Run:
    return Run.load(run_dir, precision="fp32")


def _sse(run: Run, images: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """Per-image squared error (8-bit units) of the decoded grids, as the search scores it."""
    with run.inference():
        out = run.fast_decoder(torch.from_numpy(grids)).clamp(0, 1)[..., : images.shape[1], : images.shape[2]]
        x = to_float(torch.from_numpy(images))
        return ((out.double() - x.double()) ** 2).sum((1, 2, 3)).numpy() * 255.0**2


def test_the_search_scores_every_pixel_a_code_reaches(run: Run) -> None:
    f, r = run.model.downsample, run.fast_decoder.reach
    grid = torch.randint(0, run.model.codebook_size, (1, 4 * r + 3, 4 * r + 3))
    i = j = 2 * r + 1
    other = grid.clone()
    other[0, i, j] = (grid[0, i, j] + 1) % run.model.codebook_size
    with run.inference():
        moved = (run.fast_decoder(grid) - run.fast_decoder(other)).abs().amax(1)[0]  # (H, W)
    inside = torch.zeros_like(moved, dtype=torch.bool)
    inside[(i - r) * f : (i + r + 1) * f, (j - r) * f : (j + r + 1) * f] = True
    assert moved[inside].max() > 0  # the change shows
    assert moved[~inside].max() == 0  # and nowhere outside the window the search scores


@pytest.mark.parametrize(("i", "j"), [(0, 0), (9, 8), (18, 17), (3, 16)])
def test_window_errors_differ_like_whole_image_errors(run: Run, i: int, j: int) -> None:
    # A 19 x 18 grid is wider than the decoded window (4r + 1 = 13 codes): windows are really clipped.
    images = np.stack(blob_images(2, (75, 70), 7))
    with run.inference():
        x = to_float(torch.from_numpy(images))
        idx = torch.randint(0, run.model.codebook_size, (2, 19, 18))
        options = torch.randint(0, run.model.codebook_size, (2, 5))
        window = window_sse(run, x, idx, options, i, j).double()  # (2, 5)
        whole = []
        for c in range(5):
            trial = idx.clone()
            trial[:, i, j] = options[:, c]
            whole.append(_sse(run, images, trial.numpy()))
    whole_t = torch.from_numpy(np.stack(whole, 1)).double()
    # The unscored pixels add the same to every option: the differences must agree.
    torch.testing.assert_close(window - window[:, :1], whole_t - whole_t[:, :1], atol=2.0, rtol=1e-4)
    assert (whole_t - whole_t[:, :1]).abs().max() > 100  # the options do differ


def test_search_never_decodes_worse_than_nearest_codes(run: Run) -> None:
    images = np.stack(blob_images(6, (16, 16), 11))
    nearest = np.stack(run.encode(list(images)))
    searched = search_grids(run, images, SearchConfig(passes=2, candidates=4, lmbda=0.0))
    before, after = _sse(run, images, nearest), _sse(run, images, searched)
    told: list[int] = []  # progress: every image-position of every pass, early stop or not
    search_grids(run, images, SearchConfig(passes=5, candidates=2, lmbda=0.0), progress=told.append)
    assert sum(told) == 5 * 6 * 4 * 4
    assert np.all(after <= before * (1 + 1e-6))
    assert after.sum() < 0.97 * before.sum()  # and it finds better codes


def test_the_rate_term_trades_error_for_bits(run: Run) -> None:
    images = np.stack(blob_images(4, (16, 16), 12))
    k = run.model.codebook_size
    bits = np.full(k, 8.0)
    bits[::2] = 1.0  # even codes are cheap
    free = search_grids(run, images, SearchConfig(1, 4, 0.0), bits)
    costly = search_grids(run, images, SearchConfig(1, 4, 1e9), bits)
    with run.inference():
        x = to_float(torch.from_numpy(images))
        cand = run.model.quantizer.candidates(run.model.encode_latents(x), 4).numpy()
    np.testing.assert_array_equal(bits[costly], bits[cand].min(-1))  # a huge lambda: the rate rules
    assert bits[costly].sum() < bits[free].sum()


def test_with_a_prior_the_rate_is_the_priors_given_the_codes_before(run: Run) -> None:
    """A huge lambda with the prior as the rate: at each position the search keeps the candidate the
    prior, walked over the codes chosen before it, finds most likely."""
    images = np.stack(blob_images(5, (16, 16), 15))
    prior = tiny_prior(run.model.codebook_size, (4, 4), seed=3).eval()
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0.0, 0.5)  # a peaked prior, far from uniform, so the choice is the prior's
    chosen = torch.from_numpy(search_grids(run, images, SearchConfig(1, 4, 1e9), None, None, prior))
    with run.inference():
        x = to_float(torch.from_numpy(images))
        cand = run.model.quantizer.candidates(run.model.encode_latents(x), 4).flatten(1, 2)  # (B, 16, 4)
        stream = prior.stream(len(images))
        flat = chosen.flatten(1)
        for t in range(16):
            likes = stream.logits().float().gather(1, cand[:, t])  # (B, 4)
            assert torch.equal(flat[:, t], cand[torch.arange(len(images)), t, likes.argmax(1)]), t
            stream.push(flat[:, t])


# A 6x5 grid under a 4x4 prior, by hand: per window in coding order, its origin in the grid and the
# window rows and columns it codes (the rest of the window is context, or padding past the grid's edge).
TILES_6X5 = [((0, 0), range(4), range(4)), ((0, 4), range(4), range(1)),
             ((4, 0), range(2), range(4)), ((4, 4), range(2), range(1))]  # fmt: skip
OVERLAP_6X5 = [((0, 0), range(4), range(4)), ((0, 2), range(4), range(2, 3)),
               ((2, 0), range(2, 4), range(4)), ((2, 2), range(2, 4), range(2, 3))]  # fmt: skip


@pytest.mark.parametrize(("context", "windows"), [((0, 0), TILES_6X5), ((2, 2), OVERLAP_6X5)])
def test_on_a_grid_larger_than_the_prior_the_rate_is_each_windows(
    run: Run, context: tuple[int, int], windows: list[tuple[tuple[int, int], range, range]]
) -> None:
    """A 6x5 grid under a 4x4 prior: four tiles, three cut by the grid's edge (padding copies an
    earlier code), or four windows overlapping by 2 rows and columns (each sees the codes above and
    left of what it codes). With a huge lambda each coded position keeps the candidate its window's
    prior, walked over the window's codes before it (context and padding as the coder fills them),
    finds most likely; a walk over the whole grid, or one that ignores padding or context, would not."""
    images = np.stack(blob_images(3, (24, 20), 17))
    prior = tiny_prior(run.model.codebook_size, (4, 4), seed=5).eval()
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0.0, 0.5)
    chosen = search_grids(run, images, SearchConfig(1, 4, 1e9), None, None, prior, context)
    assert chosen.shape == (3, 6, 5)
    with run.inference():
        x = to_float(torch.from_numpy(images))
        cand = run.model.quantizer.candidates(run.model.encode_latents(x), 4)  # (3, 6, 5, 4)
    checked = 0
    with torch.no_grad():
        for (y, x0), rows, cols in windows:
            ys, xs = np.minimum(np.arange(y, y + 4), 5), np.minimum(np.arange(x0, x0 + 4), 4)
            flat = torch.from_numpy(chosen[:, ys][:, :, xs].reshape(3, 16))
            stream = prior.stream(3)
            for t in range(16):
                li, lj = divmod(t, 4)
                if li in rows and lj in cols and y + li < 6 and x0 + lj < 5:
                    options = cand[:, y + li, x0 + lj]  # (3, 4)
                    likes = stream.logits().float().gather(1, options)
                    assert torch.equal(flat[:, t], options[torch.arange(3), likes.argmax(1)]), (y, x0, t)
                    checked += 1
                stream.push(flat[:, t])
    assert checked == 30


def test_compress_searches_with_the_prior_rate_when_the_prior_codes(run_dir: Path) -> None:
    run = Run.load(run_dir, precision="fp32")
    coding = Coding(run, tiny_prior(run.model.codebook_size, (4, 4), seed=4))
    images = blob_images(3, (16, 16), 16)
    config = SearchConfig(1, 4, 5000.0)
    stacked, bits = np.stack(images), coding.static_bits()
    with_prior = search_grids(run, stacked, config, bits, None, coding.search_prior())
    with_table = search_grids(run, stacked, config, bits)
    assert not np.array_equal(with_prior, with_table)  # the two rates pick differently here
    auto = compress_images(coding, images, search=config, quality=False)
    static_rate = compress_images(coding, images, search=SearchConfig(1, 4, 5000.0, "static"), quality=False)
    np.testing.assert_array_equal(np.stack(auto.grids), with_prior)
    np.testing.assert_array_equal(np.stack(static_rate.grids), with_table)


def test_a_scaled_search_weighs_errors_per_original_pixel(run_dir: Path) -> None:
    """Coded at scale 2 the picture has 4 pixels per original pixel: lambda is scaled by 4 with it."""
    run = Run.load(run_dir, precision="fp32")
    coding = Coding(run)
    images = blob_images(3, (12, 12), 17)
    stacked, bits = np.stack([resample(im, (24, 24)) for im in images]), coding.static_bits()
    lmbda = 3000.0
    scaled = search_grids(run, stacked, SearchConfig(1, 4, 4 * lmbda, "static"), bits)
    assert not np.array_equal(scaled, search_grids(run, stacked, SearchConfig(1, 4, lmbda, "static"), bits))
    result = compress_images(
        coding, images, search=SearchConfig(1, 4, lmbda, "static"), quality=False, scale=2.0
    )
    np.testing.assert_array_equal(np.stack(result.grids), scaled)


def test_config_is_checked() -> None:
    for bad in ({"passes": 0}, {"candidates": 1}, {"lmbda": -1.0}, {"lmbda": float("nan")}, {"rate": "x"}):
        with pytest.raises(ValueError, match="search"):
            SearchConfig(**bad)  # type: ignore[arg-type]


def test_compress_with_search_round_trips_and_is_sharper(run_dir: Path) -> None:
    coding = Coding(Run.load(run_dir, precision="fp32"))
    images = blob_images(5, (16, 16), 13)
    plain = compress_images(coding, images, entropy_model="static")
    searched = compress_images(coding, images, entropy_model="static", search=SearchConfig(2, 4, 0.0))
    assert searched.summary()["psnr"] > plain.summary()["psnr"]
    for data, report in zip(searched.files, searched.reports, strict=True):
        back = decompress(coding, data)[0]
        assert back.shape == (16, 16, 3)
        assert parse(data).records[0].codes_length == report.codes_bytes


def test_cli_search_flags(run_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    from PIL import Image

    for i, im in enumerate(blob_images(3, (16, 16), 14)):
        Image.fromarray(im).save(folder / f"{i}.png")
    argv = ["compress", str(run_dir), str(folder), "-o", str(tmp_path / "out"), "--precision", "fp32"]
    assert main([*argv, "--json", str(tmp_path / "plain.json")]) == 0
    assert main([*argv, "--search", "2", "--search-lambda", "0", "--json", str(tmp_path / "s.json")]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())["summary"]
    searched = json.loads((tmp_path / "s.json").read_text())["summary"]
    assert searched["psnr"] > plain["psnr"]
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["search"] == {"passes": 2, "candidates": 4, "lmbda": 0.0, "rate": "auto", "radius": None}
    with pytest.raises(SystemExit) as e:
        main([*argv, "--search", "1", "--search-candidates", "1"])
    assert e.value.code == 2


def test_positions_far_apart_score_in_one_batch_as_one_by_one(run: Run) -> None:
    """window_sse_many decodes same-shaped windows together (and clipped ones apart): each position's
    errors equal those of scoring it alone, up to float rounding."""
    r = run.fast_decoder.reach
    images = np.stack(blob_images(2, (120, 116), 9))
    with run.inference():
        x = to_float(torch.from_numpy(images))
        idx = torch.randint(0, run.model.codebook_size, (2, 30, 29))
        spots = [(15, 14), (0, 0), (15, 14 - 2 * r - 1), (29, 28), (2 * r + 1, 28), (15 - 2 * r - 1, 14)]
        trials = [(i, j, torch.randint(0, run.model.codebook_size, (2, 3))) for i, j in spots]
        together = window_sse_many(run, x, idx, trials)
        for (i, j, options), got in zip(trials, together, strict=True):
            torch.testing.assert_close(got, window_sse(run, x, idx, options, i, j), atol=0.5, rtol=1e-5)


def test_independent_groups_keep_their_members_out_of_each_others_windows() -> None:
    positions = [(n, 6 * n, 60 - 6 * n) for n in range(11)]  # one anti-diagonal wave, stride 6
    groups = independent_groups(positions, reach=8)
    assert sorted(p for g in groups for p in g) == positions  # every position once
    for g in groups:
        assert g == sorted(g)  # members keep the sweep's order
        for a in g:
            assert all(max(abs(a[1] - b[1]), abs(a[2] - b[2])) > 8 for b in g if b is not a)
    assert [len(g) for g in groups] == [6, 5]  # every other window: 12 cells apart
    assert independent_groups(positions, reach=100) == [[p] for p in positions]


@pytest.mark.parametrize(("f", "blocks", "outer"), [(4, 2, 0), (8, 1, 0), (2, 3, 0), (4, 1, 2)])
def test_cropped_windows_score_like_whole_images_with_residual_blocks(
    f: int, blocks: int, outer: int
) -> None:
    """The window decode drops one ring of cells per residual block on sides cut inside the grid (the
    codec's tiny run has none): scored errors still differ between options exactly as whole-image
    errors do, in the middle, at edges and corners, for untrained decoders of four shapes (one with
    residual blocks between the resolutions, which widen the reach)."""
    torch.manual_seed(f + blocks)
    cfg = ModelConfig(channels=16, res_channels=8, res_blocks=blocks, downsample=f, outer_blocks=outer,
                      quantizer=QuantizerConfig(codebook_size=32, code_dim=4))  # fmt: skip
    model = VQVAE(cfg).eval()
    run = Run(Path("."), RunConfig(model=cfg), model, torch.device("cpu"), {}, precision="fp32")
    r = run.fast_decoder.reach
    h, w = 4 * r + 7, 4 * r + 6
    idx = torch.randint(0, 32, (2, h, w))
    with torch.inference_mode():
        # The images the current codes decode to (cropped: not a multiple of f), so that errors are
        # small and float32 sums keep the options' differences to a small fraction.
        out = run.fast_decoder(idx).clamp(0, 1)[..., : h * f - 3, : w * f - 2]
        x = to_float(torch.from_numpy(to_uint8_hwc(out)))
        for i, j in [(h // 2, w // 2), (0, 0), (h - 1, w - 1), (2 * r, w - 2), (h // 2, 1)]:
            options = torch.randint(0, 32, (2, 4))
            window = window_sse(run, x, idx, options, i, j).double()
            whole = []
            for c in range(4):
                trial = idx.clone()
                trial[:, i, j] = options[:, c]
                out = run.fast_decoder(trial).clamp(0, 1)[..., : x.shape[2], : x.shape[3]]
                whole.append(((out.double() - x.double()) ** 2).sum((1, 2, 3)) * 255.0**2)
            whole_t = torch.stack(whole, 1)
            spread = float((whole_t - whole_t[:, :1]).abs().max())
            assert spread > 100  # the options do differ
            torch.testing.assert_close(
                window - window[:, :1], whole_t - whole_t[:, :1], atol=1e-4 * spread, rtol=0
            )
