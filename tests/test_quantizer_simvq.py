"""SimVQ: a frozen random basis C through one learned linear map W; nearest codes in C W, the codebook
loss training W, and the same codes through the codec, the prior, the features and two processes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from vqkit.codec import compress_images, decode_codes, decompress
from vqkit.config import ConfigError, QuantizerConfig, RunConfig, load_config
from vqkit.data import ImageSet
from vqkit.models import VQVAE
from vqkit.pipeline import train
from vqkit.priors import load_prior, train_prior
from vqkit.quantizers import SimVQ, build_quantizer
from vqkit.runs import Run
from vqkit.tasks.features import extract_features
from vqkit.training import evaluate

from .conftest import gloo_group, smooth_image_set, smooth_images, tiny_run_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY_PRIOR = ["model.width=16", "model.layers=1", "model.heads=2", "train.batch_size=16",
              "train.warmup_steps=2", "train.log_every=2", "train.eval_every=10",
              "train.checkpoint_every=4"]  # fmt: skip


def make(seed: int = 0, **kw: object) -> SimVQ:
    torch.manual_seed(seed)
    return SimVQ(QuantizerConfig(**{"kind": "simvq", "codebook_size": 16, "code_dim": 4, **kw}))  # type: ignore[arg-type]


def brute_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """z (B, D, h, w), codebook (K, D) -> (B*h*w, K) squared distances in float64, by broadcasting."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).double()
    return (flat[:, None, :] - codebook.double()[None]).pow(2).sum(-1)


def simvq_config(spec: str, beta: float = 0.25, **train_kw: object) -> RunConfig:
    cfg = tiny_run_config(spec, **train_kw)
    q = dataclasses.replace(cfg.model.quantizer, kind="simvq", beta=beta)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantizer=q))


# ------------------------------------------------------------------------------------- the contract


def test_the_config_builds_simvq_and_rejects_vq_only_options() -> None:
    assert isinstance(build_quantizer(QuantizerConfig(kind="simvq")), SimVQ)
    for bad in ({"lookup_dim": 2}, {"l2_normalize": True}):
        with pytest.raises(ConfigError, match="options of vq"):
            make(**bad)


def test_codes_are_the_nearest_rows_of_the_mapped_basis() -> None:
    q = make().eval()
    with torch.no_grad():
        q.linear.weight.copy_(torch.randn(4, 4))  # an arbitrary W
    z = torch.randn(3, 4, 5, 6)
    out = q(z)
    codebook = q.basis @ q.linear.weight.t()  # C W, written out: row k is W applied to C[k]
    torch.testing.assert_close(q.codebook, codebook)
    assert out.indices.shape == (3, 5, 6) and out.indices.dtype == torch.long
    assert int(out.indices.min()) >= 0 and int(out.indices.max()) < 16
    assert torch.equal(out.indices.reshape(-1), brute_distances(z, codebook).argmin(1))
    # Eval: the codes round-trip through indices, and frozen() is what the codec decodes.
    assert torch.equal(q.encode(z), out.indices)
    torch.testing.assert_close(q.indices_to_codes(out.indices), out.quantized)
    assert torch.equal(q.frozen(z).quantized, q.indices_to_codes(q.encode(z)))
    assert torch.equal(q.frozen(z).indices, out.indices)


def test_candidates_are_distinct_and_ordered_by_distance_in_the_code_space() -> None:
    q = make(seed=1).eval()
    with torch.no_grad():
        q.linear.weight.add_(0.3 * torch.randn(4, 4))
    z = torch.randn(2, 4, 3, 5)
    near = q.candidates(z, 6)
    assert near.shape == (2, 3, 5, 6)
    assert torch.equal(near[..., 0], q.encode(z))
    flat = near.reshape(-1, 6)
    assert all(len(set(row.tolist())) == 6 for row in flat)
    d = brute_distances(z, q.codebook.detach()).gather(1, flat)  # (N, 6) distances of the candidates
    assert bool((d[:, 1:] >= d[:, :-1] - 1e-5).all())
    # and no code outside the list is nearer than the last candidate
    assert torch.equal(d[:, -1], brute_distances(z, q.codebook.detach()).sort(1).values[:, 5].to(d.dtype))
    with pytest.raises(ValueError, match="between 1 and K"):
        q.candidates(z, 17)


def test_straight_through_gradient_reaches_the_encoder_and_the_codebook_loss_trains_w_only() -> None:
    q = make().train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z)
    assert set(out.losses) == {"codebook", "commitment"}
    assert all(bool(v.isfinite()) for v in out.losses.values())
    target = torch.randn_like(out.quantized)
    F.mse_loss(out.quantized, target).backward()
    # straight-through: d/dz of mse(quantized, target) is the gradient at the code, copied to z
    expected = 2 * (out.quantized - target).detach() / target.numel()
    torch.testing.assert_close(z.grad, expected)
    assert q.linear.weight.grad is None  # the output path alone does not train W

    q.zero_grad()
    out = q(z.detach())
    out.losses["codebook"].backward()
    assert q.linear.weight.grad is not None and float(q.linear.weight.grad.abs().sum()) > 0
    assert [n for n, _ in q.named_parameters()] == ["linear.weight"]  # C is a buffer, not learned
    assert "basis" in q.state_dict() and "restarts_total" not in q.state_dict()


def test_training_w_moves_codes_no_input_chose_and_leaves_the_basis_alone() -> None:
    """SimVQ's point: one shared W moves every code, so unchosen codes follow the chosen ones."""
    q = make(seed=2).train()
    basis = q.basis.clone()
    z = torch.randn(4, 4, 2, 2) + 3.0  # data far from the codes, as an untrained encoder's can be
    unused = torch.ones(16, dtype=torch.bool)
    unused[q.encode(z).unique()] = False
    assert bool(unused.any())
    before = q.codebook.detach().clone()
    optimizer = torch.optim.SGD(q.parameters(), lr=0.1)
    for _ in range(20):
        optimizer.zero_grad()
        q(z).losses["codebook"].backward()
        optimizer.step()
    assert torch.equal(q.basis, basis)  # frozen
    moved = (q.codebook.detach() - before).norm(dim=1)
    assert bool((moved[unused] > 1e-3).all())
    assert int(q.restarts_total) == 0


def test_float32_under_bfloat16_autocast() -> None:
    q = make().train()
    z = torch.randn(2, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z.bfloat16())
        codes = q.indices_to_codes(out.indices)
    assert out.quantized.dtype == torch.float32 and codes.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out.losses.values())
    assert torch.equal(out.indices, q.encode(z.bfloat16().float()))


def test_weights_rebuild_the_same_codes() -> None:
    a, b = make(seed=3), make(seed=4)  # different bases
    z = torch.randn(2, 4, 4, 4)
    assert not torch.equal(a.basis, b.basis)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.encode(z), b.encode(z))
    assert torch.equal(a.indices_to_codes(a.encode(z)), b.indices_to_codes(b.encode(z)))


def test_the_recipe_loads() -> None:
    cfg = load_config(RECIPES / "cifar10-simvq.json")
    q = cfg.model.quantizer
    assert (q.kind, q.codebook_size, cfg.model.downsample, cfg.data.image_size) == ("simvq", 512, 4, 32)
    assert isinstance(VQVAE(cfg.model).quantizer, SimVQ)


# -------------------------------------------------------------------------- through every stage


@pytest.fixture(scope="module")
def simvq_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("simvq")
    data = root / "data.npz"
    np.savez(data, images=smooth_images(96), labels=np.arange(96) % 3)
    run = root / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # On these smooth images the tiny encoder's z start inside one code's cell, and the
        # commitment term holds them there for hundreds of steps; without it a few codes are in use
        # within 24 steps, so the round trips below compare grids of several codes, not one.
        train(simvq_config(str(data), beta=0.0, max_steps=24), run, progress=False)
    finally:
        torch.set_num_threads(threads)
    return run


def test_a_simvq_run_through_codec_evaluation_prior_and_features(simvq_run: Path) -> None:
    run = Run.load(simvq_run)
    assert isinstance(run.model.quantizer, SimVQ)
    images = list(smooth_images(5, 16, seed=9))

    # codec: the codes survive compress -> decompress bit for bit
    result = compress_images(run, images, entropy_model="static")
    want = run.encode(images)
    got = [g for f in result.files for g in decode_codes(run, f)[1]]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    back = [im for f in result.files for im in decompress(run, f)]
    np.testing.assert_array_equal(back[0], run.decode(want[0][None], (16, 16))[0])

    # evaluation: usage over the K codes of C W, from the same codes the encoder gives
    stats = evaluate(run.model, images, with_ssim=False)
    used = np.unique(np.concatenate([w.reshape(-1) for w in want]))
    assert len(used) >= 2  # otherwise every comparison here is between constant grids
    assert stats["codebook_size"] == 16
    assert stats["codebook_usage"] == pytest.approx(len(used) / 16)
    assert 1.0 <= stats["perplexity"] <= len(used) + 1e-6

    # features: code histograms over K from the same codes
    data = ImageSet(
        images=images, labels=None, class_names=None, channels=3, source="test",
        names=tuple(str(i) for i in range(len(images))), skipped=(),
    )  # fmt: skip
    feats = extract_features(run, data)
    assert feats.indices is not None and feats.histograms is not None
    np.testing.assert_array_equal(np.stack(feats.indices), np.stack(want))
    counts = np.stack([np.bincount(w.reshape(-1), minlength=16) for w in want]) / want[0].size
    np.testing.assert_allclose(feats.histograms, counts)


def test_a_prior_trains_on_simvq_codes(simvq_run: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_prior(simvq_run, max_steps=4, overrides=TINY_PRIOR, progress=False)
    finally:
        torch.set_num_threads(threads)
    prior = load_prior(simvq_run)
    assert prior.config.codebook_size == 16


# ---------------------------------------------------------------------------------- two processes


def _broadcast_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    with gloo_group(rank, world, init_file):
        q = make(seed=100 + rank).train()  # each rank draws its own C
        before = q.basis.clone()
        q(torch.randn(2, 4, 3, 3))
        torch.save({"before": before, "after": q.basis.clone()}, Path(out_dir) / f"basis{rank}.pt")


def test_rank_zeros_basis_reaches_every_rank_on_the_first_training_step(tmp_path: Path) -> None:
    mp.spawn(_broadcast_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "basis0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "basis1.pt", weights_only=True)
    assert not torch.equal(r0["before"], r1["before"])  # the ranks really started apart
    assert torch.equal(r0["after"], r0["before"]) and torch.equal(r1["after"], r0["before"])


STEPS = 6


def _train_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    with gloo_group(rank, world, init_file):
        torch.set_num_threads(1)
        data = smooth_image_set(64)
        state: dict[str, torch.Tensor] = {}

        def capture(step: int, model: VQVAE) -> None:
            if step == 1:
                state["w_after_step_1"] = model.quantizer.linear.weight.detach().clone()
            if step == STEPS:
                state.update({k: v.detach().clone() for k, v in model.state_dict().items()})

        cfg = simvq_config("test", max_steps=STEPS, batch_size=16, log_every=3, eval_every=1000)
        train(cfg, Path(out_dir) / "run", progress=False, data=data, on_step=capture)
        torch.save(state, Path(out_dir) / f"rank{rank}.pt")


def test_two_processes_hold_the_same_basis_map_and_weights(tmp_path: Path) -> None:
    mp.spawn(_train_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert {"quantizer.basis", "quantizer.linear.weight"} <= set(r0)
    assert not torch.equal(r0["quantizer.linear.weight"], r0["w_after_step_1"])  # W kept training
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key  # bit for bit on every rank
