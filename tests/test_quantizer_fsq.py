"""Finite scalar quantization: the grid and its mixed-radix indices, the quantizer contract, nearest
candidates against brute force, and a tiny run through every stage (training, codec, evaluation,
prior, features, two-process DDP)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from vqkit.cli import main
from vqkit.codec import compress_images, decode_codes, decompress
from vqkit.codec.search import SearchConfig
from vqkit.config import QuantizerConfig, RunConfig, load_config
from vqkit.data import ImageSet
from vqkit.models import VQVAE
from vqkit.pipeline import train
from vqkit.priors import train_prior
from vqkit.quantizers import build_quantizer
from vqkit.quantizers.fsq import FiniteScalarQuantizer, rank_tuples
from vqkit.runs import Run, layout
from vqkit.runs.results import read_result
from vqkit.tasks.features import extract_features
from vqkit.training import evaluate

from .conftest import gloo_group, smooth_image_set, smooth_images, tiny_run_config

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "cifar10-fsq.json"
# Even and odd level counts, and the smallest (2), in one grid: K = 120.
LEVELS = (5, 2, 4, 3)


def make(levels: tuple[int, ...] = LEVELS, code_dim: int = 6, seed: int = 0) -> FiniteScalarQuantizer:
    torch.manual_seed(seed)
    q = build_quantizer(
        QuantizerConfig(kind="fsq", levels=levels, codebook_size=math.prod(levels), code_dim=code_dim)
    )
    assert isinstance(q, FiniteScalarQuantizer)
    return q.eval()


def latents(*shape: int, scale: float = 2.0, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def reference_grid(levels: tuple[int, ...]) -> torch.Tensor:
    """(K, d) code-space points of indices 0..K-1, dimension 0 the least significant digit (built
    with numpy's unravel_index, independently of the module)."""
    k = math.prod(levels)
    digits = np.stack(np.unravel_index(np.arange(k), levels[::-1])[::-1], axis=1)  # (K, d)
    half = np.array(levels) // 2
    return torch.from_numpy((digits - half) / half).float()


# ------------------------------------------------------------------------------------------ the grid


def test_indices_to_codes_inverts_the_mixed_radix_index_exactly() -> None:
    q = make()
    k = q.codebook_size
    codes = q.scaled_codes(torch.arange(k).view(k, 1, 1))[:, :, 0, 0]  # (K, d)
    assert torch.equal(codes, reference_grid(LEVELS))
    # Every grid point comes back as its own index: rounding a code reproduces it (FSQ is its own
    # quantizer on the grid), so the index map is a bijection onto [0, K).
    level_units = codes * q.half_width  # (K, d)
    assert torch.equal(q._indices_of(level_units.view(k, -1, 1, 1).round()).view(-1), torch.arange(k))


def test_every_level_is_reached_and_none_beyond_the_grid() -> None:
    """Bounds for even and odd L: large inputs saturate the tanh at the outermost levels, and every
    one of the K codes is used by some input."""
    q = make()
    with torch.no_grad():  # project_in keeps the first d channels, so the d dimensions vary freely
        q.project_in.weight.copy_(torch.eye(len(LEVELS), 6).view(len(LEVELS), 6, 1, 1))
        q.project_in.bias.zero_()
    # Scales from 0.1 (the middle levels) to 30 (saturated: the outermost ones).
    scales = torch.logspace(-1, 1.5, 4000).view(-1, 1, 1, 1)
    z = latents(4000, 6, 2, 2, scale=1.0) * scales
    idx = q.encode(z)
    assert idx.min() >= 0 and idx.max() < q.codebook_size
    assert torch.equal(idx.unique(), torch.arange(q.codebook_size))
    scaled = q.code_space(z)
    for i, n in enumerate(LEVELS):
        half = n // 2
        assert (
            scaled[:, i].min() >= (-half - 0.5) / half and scaled[:, i].max() <= (n - 1 - half + 0.5) / half
        )
        values = q.scaled_codes(idx)[:, i].unique()
        assert torch.equal(values, (torch.arange(n) - half).float() / half)


def test_levels_are_symmetric_about_zero() -> None:
    """A zero projection sits on level 0 for an odd L and half-way between the two middle levels for
    an even L (the half-level offset, FSQ sec. 3.1), so z and -z reach mirrored levels: with
    symmetric inputs both levels of L = 2 are used equally often."""
    q = make()
    with torch.no_grad():
        q.project_in.bias.zero_()
    zero = q.code_space(torch.zeros(1, 6, 1, 1))[0, :, 0, 0]
    half = torch.tensor(LEVELS) // 2
    expected = torch.tensor([0.0 if n % 2 else -0.5 for n in LEVELS]) / half
    assert torch.equal(zero, expected)
    z = latents(500, 6, 2, 2)
    up, down = q.code_space(z) * half.view(1, -1, 1, 1), q.code_space(-z) * half.view(1, -1, 1, 1)
    offset = (expected * half).view(1, -1, 1, 1)
    torch.testing.assert_close(up - offset, -(down - offset))  # mirrored about the centre
    binary = q.scaled_codes(q.encode(z))[:, 1]  # the L = 2 dimension
    assert 0.4 < (binary < 0).float().mean() < 0.6


def test_encode_is_the_nearest_grid_point_in_the_code_space() -> None:
    q = make()
    z = latents(3, 6, 5, 5)
    x = q.code_space(z).permute(0, 2, 3, 1).reshape(-1, len(LEVELS)).double()
    brute = torch.cdist(x, reference_grid(LEVELS).double()).argmin(1)
    assert torch.equal(q.encode(z).view(-1), brute)


# ------------------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_codes_of_indices_equal_forward_and_frozen(mode: str) -> None:
    q = make().train(mode == "train")
    z = latents(2, 6, 4, 5)
    out = q(z)
    assert out.indices.shape == (2, 4, 5) and out.indices.dtype == torch.long
    assert out.quantized.shape == z.shape and out.losses == {}  # no codebook or commitment loss
    assert torch.equal(q.encode(z), out.indices)
    assert torch.equal(q.indices_to_codes(out.indices), out.quantized)
    frozen = q.frozen(z)
    assert torch.equal(frozen.indices, out.indices) and torch.equal(frozen.quantized, out.quantized)
    assert int(q.restarts_total) == 0
    # The grid comes from the config: the weights hold the two projections only.
    assert set(q.state_dict()) == {f"project_{s}.{p}" for s in ("in", "out") for p in ("weight", "bias")}


def test_straight_through_gradient_is_that_of_the_bounded_scalars() -> None:
    """d quantized / d z equals the gradient through project_out(bounded / half_width), the rounding
    skipped (FSQ sec. 3.1), and reaches the encoder side (z and project_in)."""
    q = make().train()
    z = latents(2, 6, 3, 3).requires_grad_(True)
    target = latents(2, 6, 3, 3, seed=7)
    F.mse_loss(q(z).quantized, target).backward()
    assert z.grad is not None and q.project_in.weight.grad is not None
    got, got_w = z.grad.clone(), q.project_in.weight.grad.clone()
    assert got.abs().sum() > 0 and torch.isfinite(got).all()

    z.grad, q.project_in.weight.grad = None, None
    smooth = q.project_out(q._bounded(z) / q.half_width.view(1, -1, 1, 1))
    # The same upstream gradient: the forward value is the grid point, not the bounded value.
    (((q(z).quantized.detach() - target) * smooth).sum() * 2 / target.numel()).backward()
    torch.testing.assert_close(z.grad, got)
    torch.testing.assert_close(q.project_in.weight.grad, got_w)


def test_float32_and_the_same_codes_under_bf16_autocast() -> None:
    q = make()
    z = latents(2, 6, 4, 4)
    plain = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z.bfloat16())
        codes = q.indices_to_codes(out.indices)
        idx = q.encode(z.bfloat16())
        near = q.candidates(z.bfloat16(), 3)
    assert out.quantized.dtype == torch.float32 and codes.dtype == torch.float32
    ref = q(z.bfloat16().float())  # the input rounded to bf16, then quantized in float32
    assert torch.equal(out.indices, ref.indices) and torch.equal(out.quantized, ref.quantized)
    assert torch.equal(idx, ref.indices) and torch.equal(near[..., 0], ref.indices)
    assert (out.indices == plain.indices).float().mean() > 0.9  # the bf16 input moved only a few


# ------------------------------------------------------------------------------------- candidates


@pytest.mark.parametrize("levels", [LEVELS, (8, 8, 8), (2, 2, 2, 2), (16, 3)])
def test_candidates_are_the_nearest_codes_in_order(levels: tuple[int, ...]) -> None:
    q = make(levels)
    z = latents(2, 6, 4, 4)
    x = q.code_space(z).permute(0, 2, 3, 1).reshape(-1, len(levels)).double()  # (N, d)
    dist = torch.cdist(x, reference_grid(levels).double()).pow(2)  # (N, K), brute force
    for k in sorted({1, 2, 5, 9, 27, q.codebook_size}):
        if k > q.codebook_size:
            continue
        near = q.candidates(z, k)
        assert near.shape == (2, 4, 4, k) and near.dtype == torch.long
        assert torch.equal(near[..., 0], q.encode(z))
        flat = near.view(-1, k)
        assert all(len(set(row.tolist())) == k for row in flat)  # distinct
        d = dist.gather(1, flat)
        assert (d[:, 1:] >= d[:, :-1] - 1e-6).all()  # nearest first
        best = dist.sort(1).values[:, :k]  # the k smallest distances of the whole grid
        torch.testing.assert_close(d, best, rtol=0, atol=1e-6)
        assert torch.equal(q.candidates(z, k), near)  # deterministic


def test_candidates_break_ties_deterministically_and_by_rank() -> None:
    """A bounded point exactly between levels: every tie resolves the same way on every call, and
    entry 0 is still encode()'s (round half to even) choice."""
    q = make((4, 4), code_dim=2)
    # In level units L = 4 spans (-2.5, 1.5): a zero projection maps to exactly -0.5, half-way
    # between levels -1 and 0.
    with torch.no_grad():
        q.project_in.weight.zero_()
        q.project_in.bias.zero_()
    z = latents(1, 2, 1, 1)
    assert torch.equal(q.code_space(z), torch.full((1, 2, 1, 1), -0.25))
    near = q.candidates(z, 16)
    # Level 0 (round half to even of -0.5) is digit 2 in both dimensions: index 2 + 4 * 2 = 10.
    assert int(near[0, 0, 0, 0]) == 10 == int(q.encode(z))
    # The other corners of the tie square are equally near; they follow in rank order (dimension 0
    # first): ranks (0, 1) = digits (2, 1) -> 6, (1, 0) -> 9, (1, 1) -> 5.
    assert near[0, 0, 0, 1:4].tolist() == [6, 9, 5]
    assert torch.equal(q.candidates(z, 16), near)


def test_rank_tuples_cover_the_k_nearest() -> None:
    """The enumerated rank tuples are exactly those with prod(j + 1) <= k inside the grid, and
    sorted by rank sum: at most K of them, at least k."""
    for sizes, k in (((8, 8, 8), 8), ((5, 2, 4, 3), 30), ((2, 2), 4), ((16,), 7)):
        got = [tuple(t) for t in rank_tuples(k, sizes).tolist()]
        grid = np.ndindex(*sizes)
        want = sorted((t for t in grid if math.prod(j + 1 for j in t) <= k), key=lambda t: (sum(t), t))
        assert got == want and k <= len(got) <= math.prod(sizes)


def test_candidates_reject_k_outside_the_grid() -> None:
    q = make()
    for k in (0, q.codebook_size + 1):
        with pytest.raises(ValueError, match="candidates must be between 1 and K = 120"):
            q.candidates(latents(1, 6, 2, 2), k)


# ------------------------------------------------------------------------------------------ recipe


def test_recipe_loads_and_builds_the_8x8x8_grid() -> None:
    cfg = load_config(RECIPE)
    q = cfg.model.quantizer
    assert (q.kind, q.levels, q.codebook_size) == ("fsq", (8, 8, 8), 512)
    model = VQVAE(cfg.model).eval()
    assert isinstance(model.quantizer, FiniteScalarQuantizer)
    assert model.encode(torch.rand(1, 3, cfg.data.image_size, cfg.data.image_size)).shape == (1, 8, 8)


# ------------------------------------------------------------------------------- through the stages

TINY_PRIOR = ["model.width=16", "model.layers=1", "model.heads=2", "train.batch_size=16",
              "train.warmup_steps=2", "train.log_every=2", "train.eval_every=10",
              "train.checkpoint_every=4"]  # fmt: skip


def fsq_config(spec: str, **train_overrides: object) -> RunConfig:
    cfg = tiny_run_config(spec, **train_overrides)
    q = dataclasses.replace(cfg.model.quantizer, kind="fsq", levels=(4, 4), codebook_size=16)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantizer=q))


@pytest.fixture(scope="module")
def fsq_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fsq")
    data = root / "data.npz"
    np.savez(data, images=smooth_images(96), labels=np.arange(96) % 3)
    torch.set_num_threads(1)
    train(fsq_config(str(data), max_steps=8), root / "run", progress=False)
    return root / "run"  # the prior trains on the run's own data spec (data.npz)


def test_codec_round_trip_is_bit_exact(fsq_run: Path) -> None:
    run_dir = fsq_run
    run = Run.load(run_dir)
    images = list(smooth_images(3, size=16, seed=5))
    want = run.encode(images)
    for entropy_model in ("raw", "static"):
        result = compress_images(run_dir, images, entropy_model=entropy_model)
        for f, w in zip(result.files, want, strict=True):
            (got,) = decode_codes(run_dir, f)[1]
            np.testing.assert_array_equal(got, w)  # codes are bit-exact
            (back,) = decompress(run_dir, f)
            np.testing.assert_array_equal(back, run.decode(w[None], (16, 16))[0])
    # The encoder search walks FSQ's candidates and still writes decodable files.
    searched = compress_images(run_dir, images, search=SearchConfig(passes=1, candidates=3), quality=False)
    for f in searched.files:
        (grid,) = decode_codes(run_dir, f)[1]
        assert grid.shape == (4, 4) and grid.min() >= 0 and grid.max() < 16


def test_evaluation_counts_usage_over_the_implicit_codebook(fsq_run: Path) -> None:
    run_dir = fsq_run
    run = Run.load(run_dir)
    images = list(smooth_images(40, seed=9))
    ev = evaluate(run.model, images, with_ssim=False)
    counts = np.bincount(np.concatenate([g.reshape(-1) for g in run.encode(images)]), minlength=16)
    assert ev["codebook_usage"] == pytest.approx((counts > 0).mean())
    p = counts / counts.sum()
    perplexity = math.exp(-sum(x * math.log(x) for x in p if x > 0))
    assert ev["perplexity"] == pytest.approx(perplexity, rel=1e-4)


@pytest.fixture(scope="module")
def fsq_prior_run(fsq_run: Path) -> Path:
    """The tiny run with a tiny prior over its codes."""
    train_prior(fsq_run, max_steps=4, overrides=TINY_PRIOR, progress=False)
    return fsq_run


def test_prior_and_features(fsq_prior_run: Path) -> None:
    run_dir = fsq_prior_run
    prior_eval = read_result(run_dir / layout.PRIOR_EVAL_FILE, "prior_eval").data
    # A prior over K = 16 codes, 4 steps in: held-out cost near log2 16 = 4 bits, finite and positive.
    assert 0 < prior_eval["nll_bits_per_code"] < 6
    run = Run.load(run_dir)
    images = smooth_images(5, seed=3)
    feats = extract_features(run, ImageSet(
        images=list(images), labels=None, class_names=None, channels=3, source="test",
        names=tuple(str(i) for i in range(5)), skipped=(),
    ))  # fmt: skip
    assert feats.indices is not None and feats.histograms is not None
    np.testing.assert_array_equal(np.stack(feats.indices), np.stack(run.encode(list(images))))
    counts = np.stack([np.bincount(g.reshape(-1), minlength=16) for g in feats.indices])
    np.testing.assert_allclose(feats.histograms, counts / 16)


def test_samples_codebook_picture_and_report(fsq_prior_run: Path) -> None:
    """The commands after training, each through the command line: sampling from the prior, the
    codebook picture with its health over the implicit codebook, and the report showing both."""
    run_dir, data = fsq_prior_run, fsq_prior_run.parent / "data.npz"
    assert main(["sample", str(run_dir), "-n", "4"]) == 0
    assert (run_dir / layout.SAMPLES_FILE).is_file()
    assert main(["codebook", str(run_dir), "-o", str(run_dir.parent / "cb.png"), "--data", str(data)]) == 0
    health = read_result(run_dir / layout.CODEBOOK_FILE, "codebook").data
    counts = np.bincount(np.concatenate([g.reshape(-1) for g in Run.load(run_dir).encode(
        list(np.load(data)["images"])
    )]), minlength=16)  # fmt: skip
    assert health["codebook_size"] == 16 and health["codebook_usage"] == pytest.approx((counts > 0).mean())
    out = run_dir.parent / "report.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    text = out.read_text()
    assert "codebook_usage" in text and "data:image/png;base64," in text


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    with gloo_group(rank, world, init_file):
        torch.set_num_threads(1)
        state: dict[str, torch.Tensor] = {}

        def capture(step: int, model: VQVAE) -> None:
            if step == 1:
                state["first.project_in.weight"] = model.quantizer.project_in.weight.detach().clone()
            if step == 3:
                state.update({k: v.detach().clone() for k, v in model.state_dict().items()})
                state["restarts_total"] = model.quantizer.restarts_total.clone()

        images = smooth_image_set(48)
        cfg = fsq_config("test", max_steps=3, log_every=3, eval_every=1000, checkpoint_every=1000)
        train(cfg, Path(out_dir) / "run", progress=False, data=images, on_step=capture)
        torch.save(state, Path(out_dir) / f"rank{rank}.pt")


def test_two_processes_end_with_identical_quantizer_and_weights(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert set(r0) == set(r1) and "quantizer.project_in.weight" in r0
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    assert int(r0["restarts_total"]) == 0
    # The projections kept training after step 1 (identical because they learned the same way).
    assert not torch.equal(r0["quantizer.project_in.weight"], r0["first.project_in.weight"])
