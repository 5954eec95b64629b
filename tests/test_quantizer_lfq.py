"""Lookup-free quantization (vqkit.quantizers.lfq): the quantizer contract, the bit packing, the
entropy term against a brute-force softmax over every code, candidates against a full search, DDP
parity, and a tiny run through training, the codec, evaluation, the prior and features.

The ``check_*`` helpers take the kind and are shared with tests/test_quantizer_bsq.py."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vqkit.codec import compress_images, decode_codes, decompress
from vqkit.config import ConfigError, QuantizerConfig, load_config
from vqkit.data import ImageSet, load_dataset, to_float
from vqkit.metrics import CodebookUsage
from vqkit.models import VQVAE
from vqkit.pipeline import train
from vqkit.priors import train_prior
from vqkit.quantizers import build_quantizer
from vqkit.quantizers import lfq as lfq_module
from vqkit.quantizers.lfq import (
    BinaryCodeQuantizer,
    LookupFreeQuantizer,
    bits_to_indices,
    entropy_terms,
    indices_to_bits,
    nearest_flips,
)
from vqkit.runs import Run
from vqkit.tasks.features import extract_features
from vqkit.training import evaluate

from .conftest import gloo_group, smooth_image_set, smooth_images, tiny_run_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY_PRIOR = ["model.width=16", "model.layers=1", "model.heads=2", "train.batch_size=16",
              "train.warmup_steps=2", "train.log_every=2", "train.eval_every=10",
              "train.checkpoint_every=4"]  # fmt: skip


def make(kind: str, **kw: Any) -> BinaryCodeQuantizer:
    """K = 64 (6 bits) on D = 8 channels, unless overridden."""
    q = build_quantizer(QuantizerConfig(**{"kind": kind, "codebook_size": 64, "code_dim": 8, **kw}))
    assert isinstance(q, BinaryCodeQuantizer)
    return q


def brute_force_entropies(q: BinaryCodeQuantizer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, b) points -> (mean per-position entropy, codebook entropy) of the soft assignment
    softmax(-||x - c||^2 / t) over all K codes, in float64; t = temperature * code_scale**2 makes a
    bit's log-odds 4 x_j / (code_scale * temperature), as the quantizer defines them."""
    codes = q.code_vectors(torch.arange(q.codebook_size)).double()  # (K, b)
    t = q.temperature * q.code_scale**2
    log_q = torch.log_softmax(-torch.cdist(x.double(), codes).pow(2) / t, dim=1)  # (N, K)
    per_position = -(log_q.exp() * log_q).sum(1).mean()
    avg = log_q.exp().mean(0)
    return per_position, -(avg * avg.clamp_min(1e-300).log()).sum()


# ------------------------------------------------------------------------------ shared contract checks


def check_contract(kind: str) -> None:
    """Indices in [0, K); in eval mode encode, forward, frozen and indices_to_codes agree exactly;
    the index is the sign pattern read as a binary number (dimension 0 most significant)."""
    torch.manual_seed(0)
    q = make(kind).eval()
    z = torch.randn(3, 8, 5, 7)
    out = q(z)
    idx = q.encode(z)
    assert idx.shape == (3, 5, 7) and idx.dtype == torch.long
    assert int(idx.min()) >= 0 and int(idx.max()) < q.codebook_size
    assert torch.equal(out.indices, idx)
    assert torch.equal(q.indices_to_codes(idx), out.quantized)
    frozen = q.frozen(z)
    assert torch.equal(frozen.quantized, out.quantized) and torch.equal(frozen.indices, idx)
    assert frozen.losses == {} and set(out.losses) == {"commitment", "entropy"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    x = q.code_space(z)  # (N, b)
    weights = 2 ** torch.arange(q.bits - 1, -1, -1)
    assert torch.equal(idx.reshape(-1), ((x > 0).long() * weights).sum(1))
    # The code a position decodes from is the sign pattern at the code scale.
    assert torch.equal(q.code_vectors(idx.reshape(-1)), q.code_scale * torch.sign(x))
    assert len(set(idx.reshape(-1).tolist())) > 20  # 105 random positions spread over 64 codes


def check_candidates(kind: str) -> None:
    """candidates: entry 0 is encode's code, the entries are distinct, ordered by squared distance in
    the code space, and they are the k nearest of all K codes (a full search as the reference)."""
    torch.manual_seed(1)
    q = make(kind).eval()
    z = torch.randn(2, 8, 4, 5)
    x = q.code_space(z)  # (40, 6)
    every = torch.cdist(x.double(), q.code_vectors(torch.arange(64)).double()).pow(2)  # (40, 64)
    for k in (1, 2, 5, 17, 64):
        cand = q.candidates(z, k)
        assert cand.shape == (2, 4, 5, k) and cand.dtype == torch.long
        assert torch.equal(cand[..., 0], q.encode(z))
        flat = cand.reshape(-1, k)
        assert all(len(set(row.tolist())) == k for row in flat)  # distinct codes
        d = every.gather(1, flat)
        assert bool((d.diff(dim=1) >= -1e-9).all())  # nearest first
        torch.testing.assert_close(d, every.sort(1).values[:, :k])  # the k nearest of all K
    assert torch.equal(q.candidates(z, 5), q.candidates(z, 5))
    for bad in (0, 65):
        with pytest.raises(ValueError, match="between 1 and K"):
            q.candidates(z, bad)


def check_straight_through(kind: str) -> None:
    """In training the gradient of a loss on ``quantized`` reaches z through the straight-through
    path: it equals the gradient of the same loss through the continuous path project_out(x)."""
    torch.manual_seed(2)
    q = make(kind, entropy_weight=0.0).train()
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    out = q(z)
    target = torch.randn_like(out.quantized)
    F.mse_loss(out.quantized, target).backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    # Reference: d quantized / d x is project_out's map; push the same upstream gradient through x.
    z2 = z.detach().clone().requires_grad_(True)
    x = q.code_space(z2)
    g_q = 2 * (out.quantized.detach() - target) / target.numel()  # (B, D, h, w) d loss / d quantized
    w = q.project_out.weight.detach()[:, :, 0, 0]  # (D, b)
    g_x = torch.einsum("bdhw,de->bhwe", g_q, w).reshape(-1, q.bits)  # d loss / d point
    (x * g_x).sum().backward()
    torch.testing.assert_close(z.grad, z2.grad)


def check_float32_under_autocast(kind: str) -> None:
    q = make(kind).train()
    z = torch.randn(2, 8, 3, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
        codes = q.indices_to_codes(out.indices)
        frozen = q.frozen(z)
    assert out.quantized.dtype == torch.float32 and codes.dtype == torch.float32
    assert frozen.quantized.dtype == torch.float32
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.losses.values())
    # Eval-mode values match the float32 computation on the same (bf16-valued) input exactly.
    q.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = q(z)
    assert torch.equal(auto.quantized, q(z.float()).quantized)


def check_entropy_matches_brute_force(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact path: per-position and codebook entropy equal a softmax over all K codes; the factorised
    path (forced for this small K) is the sum of the bits' batch entropies, an upper bound on the
    exact codebook entropy, with the same per-position entropy. The loss is weighted as configured."""
    torch.manual_seed(3)
    q = make(kind, entropy_weight=0.3).train()
    z = torch.randn(4, 8, 3, 3) * 0.5
    out = q(z)  # the first training pass sets project_in's scale (the data-dependent start)
    x = q.code_space(z).detach()
    logits = 4.0 * x / (q.code_scale * q.temperature)
    per_position, codebook = entropy_terms(logits, collective=False)
    ref_per, ref_book = brute_force_entropies(q, x)
    torch.testing.assert_close(per_position.double(), ref_per, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(codebook.double(), ref_book, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        out.losses["entropy"].double(), 0.3 * (ref_per - ref_book), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(out.losses["commitment"], 0.25 * F.mse_loss(x, q.code_scale * torch.sign(x)))

    monkeypatch.setattr(lfq_module, "EXACT_ENTROPY_MAX_K", 32)  # K = 64 now takes the factorised path
    fac_per, fac_book = entropy_terms(logits, collective=False)
    p = torch.sigmoid(logits.double()).mean(0)  # (b,) batch share of + per bit
    torch.testing.assert_close(fac_per.double(), ref_per, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fac_book.double(), -(p * p.log() + (1 - p) * (1 - p).log()).sum())
    assert float(fac_book) >= float(codebook) - 1e-5


def check_entropy_spreads_usage(kind: str, at_least: int) -> None:
    """Latents bunched near one code: with the entropy term the optimisation spreads them over at least
    ``at_least`` of the 64 codes; without it (commitment alone) they stay on a few (at most 8). The
    data-dependent start is skipped: it would spread them at once, and this is about the loss term."""
    used = {}
    for weight in (0.0, 0.1):
        torch.manual_seed(0)
        q = make(kind, entropy_weight=weight).train()
        q.initialized.fill_(True)
        z = (torch.randn(256, 8) * 0.1 + 0.2).requires_grad_(True)
        opt = torch.optim.Adam([z, *q.parameters()], lr=1e-2)
        for _ in range(60):
            out = q(z.view(8, 32, 8).permute(0, 2, 1).unsqueeze(-1))  # (8, D, 32, 1)
            opt.zero_grad()
            sum(out.losses.values(), torch.zeros(())).backward()
            opt.step()
        used[weight] = len(set(out.indices.reshape(-1).tolist()))
    assert used[0.0] <= 8 and used[0.1] >= at_least, used


def check_data_dependent_start(kind: str) -> None:
    """The first training pass centres each projected dimension on its batch (mean 0, before any
    normalisation onto the sphere) and, where the kind scales, gives it variance 1 (the weights
    otherwise keep their norms), once; evaluation passes never do."""
    torch.manual_seed(4)
    q = make(kind)
    z = torch.randn(4, 8, 5, 5) * 0.05 + torch.linspace(-1, 1, 8).view(1, 8, 1, 1)  # a large common part
    before = q.project_in.weight.clone()
    q.eval()(z)
    assert not bool(q.initialized) and torch.equal(q.project_in.weight, before)
    q.train()(z)
    assert bool(q.initialized)
    with torch.no_grad():
        x = q.project_in(z).permute(0, 2, 3, 1).reshape(-1, q.bits)
    torch.testing.assert_close(x.mean(0), torch.zeros(q.bits), atol=1e-4, rtol=0)
    if q.init_scales:
        torch.testing.assert_close(x.var(0, unbiased=False), torch.ones(q.bits), atol=1e-3, rtol=0)
    else:
        assert torch.equal(q.project_in.weight, before)
    assert len(set(q.encode(z).reshape(-1).tolist())) > 20  # 100 positions over many codes, not one
    after = q.project_in.weight.clone()
    q(z * 3)
    assert torch.equal(q.project_in.weight, after)  # once only (the flag is saved with the weights)
    assert "initialized" in q.state_dict()


# ----------------------------------------------------------------------------------------- DDP


def _ddp_grads(kind: str, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """One training step's loss and gradients of a seeded quantizer on z; under DDP, this rank's
    share of the batch with the parameter gradients averaged over ranks, as DDP does."""
    torch.manual_seed(0)
    q = make(kind, entropy_weight=0.5).train()
    z = z.clone().requires_grad_(True)
    out = q(z)
    sum(out.losses.values(), torch.zeros(())).backward()
    grads = {name: p.grad.clone() for name, p in q.named_parameters() if p.grad is not None}
    if dist.is_initialized():
        for g in grads.values():
            dist.all_reduce(g)
            g /= dist.get_world_size()
    assert z.grad is not None
    return {**grads, "entropy": out.losses["entropy"].detach(), "z_grad": z.grad}


def _global_batch() -> torch.Tensor:
    return torch.randn(8, 8, 3, 3, generator=torch.Generator().manual_seed(7))


def _ddp_worker(rank: int, world: int, kind: str, init_file: str, out_dir: str) -> None:
    with gloo_group(rank, world, init_file):
        torch.set_num_threads(1)
        share = _global_batch().chunk(world)[rank]
        result: dict[str, Any] = {"grads": _ddp_grads(kind, share)}
        state: dict[str, torch.Tensor] = {}

        def capture(step: int, model: VQVAE) -> None:
            if step == DDP_STEPS:
                state.update({k: v.detach().clone() for k, v in model.state_dict().items()})

        train(
            _ddp_run_config(kind), Path(out_dir) / "run", progress=False, data=_ddp_images(), on_step=capture
        )
        result["state"] = state
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")


DDP_STEPS = 6


def _ddp_images() -> ImageSet:
    return smooth_image_set(64)


def _ddp_run_config(kind: str):  # type: ignore[no-untyped-def]
    cfg = tiny_run_config("test", max_steps=DDP_STEPS, batch_size=16, log_every=3, eval_every=1000)
    q = dataclasses.replace(cfg.model.quantizer, kind=kind, entropy_weight=0.5)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantizer=q))


def check_ddp(kind: str, tmp_path: Path) -> None:
    """Two gloo processes, each on half of a batch: the entropy term is the same on both ranks and
    equals one process's over the whole batch, and the averaged gradients equal one process's (so the
    batch statistics are reduced across ranks and their gradient scaled to match). Then a short
    training run through the pipeline: both ranks end with identical weights, close to one process's."""
    mp.spawn(_ddp_worker, args=(2, kind, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    single = _ddp_grads(kind, _global_batch())
    assert torch.equal(r0["grads"]["entropy"], r1["grads"]["entropy"])  # one loss on every rank
    torch.testing.assert_close(r0["grads"]["entropy"], single["entropy"], rtol=1e-5, atol=1e-6)
    for name in ("project_in.weight", "project_in.bias"):  # the loss terms reach the input projection
        assert torch.equal(r0["grads"][name], r1["grads"][name]), name
        torch.testing.assert_close(r0["grads"][name], single[name], rtol=1e-4, atol=1e-6, msg=name)
    # Each rank's input gradient is the world size times one process's (DDP's loss is a local mean).
    z_grads = torch.cat([r0["grads"]["z_grad"], r1["grads"]["z_grad"]]) / 2
    torch.testing.assert_close(z_grads, single["z_grad"], rtol=1e-4, atol=1e-7)

    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key  # identical weights on every rank
    alone: dict[str, torch.Tensor] = {}

    def capture(step: int, model: VQVAE) -> None:
        if step == DDP_STEPS:
            alone.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    torch.set_num_threads(1)
    train(_ddp_run_config(kind), tmp_path / "single", progress=False, data=_ddp_images(), on_step=capture)
    assert set(alone) == set(r0["state"]) and any(k.startswith("quantizer.project_in") for k in alone)
    for key in alone:
        # Equal up to float reduction order: Adam magnifies 1e-7 gradient differences in tiny weights,
        # and a latent whose margin is ~1e-7 may take the other sign (the data-dependent start centres
        # every bit on the batch, so such latents exist), moving a few weights by ~1e-3.
        torch.testing.assert_close(
            r0["state"][key], alone[key], rtol=5e-2, atol=5e-3, msg=lambda m, k=key: f"{k}: {m}"
        )


# ------------------------------------------------------------------------------------ end to end


def check_end_to_end(kind: str, tmp_path: Path) -> None:
    """A tiny run with this kind: training, then the codec (codes bit-exact through compress ->
    decompress, static table and prior), evaluation's codebook health over the implicit codebook,
    a short prior training and features."""
    images = smooth_images(96)
    data_path = tmp_path / "tiny.npz"
    np.savez(data_path, images=images, labels=np.arange(96) % 3)
    cfg = tiny_run_config(str(data_path), max_steps=12, eval_every=12, checkpoint_every=12)
    q = dataclasses.replace(cfg.model.quantizer, kind=kind, codebook_size=64, entropy_weight=1.0)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantizer=q))
    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    train(cfg, run_dir, progress=False)
    run = Run.load(run_dir)
    assert type(run.model.quantizer) is type(make(kind))

    probe = list(images[:24])
    codes = run.encode(probe)  # (4, 4) grids
    result = compress_images(run_dir, probe, entropy_model="static", archive=True)
    (back,) = [decode_codes(run_dir, f)[1] for f in result.files]
    for got, want in zip(back, codes, strict=True):
        np.testing.assert_array_equal(got, want)  # bit-exact codes
    assert [im.shape for im in decompress(run_dir, result.files[0])] == [im.shape for im in probe]

    ev = evaluate(run.model, probe, with_ssim=False)
    usage = CodebookUsage(64)  # the reference: the model's own codes, on evaluate's path (float32 input)
    usage.update(run.model.encode(to_float(torch.from_numpy(np.stack(probe)))))
    assert ev["codebook_size"] == 64 and ev["codebook_usage"] == usage.usage  # over the implicit codebook
    assert ev["perplexity"] == pytest.approx(usage.perplexity)
    assert ev["perplexity"] > 8  # the codes vary (about 27 to 30 seen), so the round trips mean something

    summary = train_prior(run_dir, max_steps=6, overrides=TINY_PRIOR, progress=False)
    assert summary["step"] == 6 and summary["stopped"] == "finished", summary
    prior_coded = compress_images(run_dir, probe[:4], entropy_model="prior", archive=True, quality=False)
    for got, want in zip(decode_codes(run_dir, prior_coded.files[0])[1], codes[:4], strict=True):
        np.testing.assert_array_equal(got, want)

    feats = extract_features(run, load_dataset(data_path, max_images=24))
    assert feats.histograms is not None and feats.codebook_size == 64
    counts = np.stack([np.bincount(g.reshape(-1), minlength=64) for g in codes])
    np.testing.assert_allclose(feats.histograms, counts / 16)


def check_recipe(kind: str) -> None:
    """recipes/cifar10-<kind>.json loads and builds this kind with K = 512 (9 bits) from D = 64."""
    cfg = load_config(RECIPES / f"cifar10-{kind}.json")
    assert cfg.model.quantizer.kind == kind and cfg.model.quantizer.codebook_size == 512
    model = VQVAE(cfg.model)
    q = model.quantizer
    assert isinstance(q, BinaryCodeQuantizer) and q.bits == 9 and q.project_in.in_channels == 64
    images = torch.rand(2, 3, 32, 32)
    assert model.encode(images).shape == (2, 8, 8)


# ------------------------------------------------------------------------------------------ tests


def test_contract() -> None:
    check_contract("lfq")


def test_candidates_are_the_nearest_codes_in_order() -> None:
    check_candidates("lfq")


def test_straight_through_gradient_reaches_the_encoder() -> None:
    check_straight_through("lfq")


def test_float32_under_autocast() -> None:
    check_float32_under_autocast("lfq")


def test_entropy_matches_a_softmax_over_every_code(monkeypatch: pytest.MonkeyPatch) -> None:
    check_entropy_matches_brute_force("lfq", monkeypatch)


def test_entropy_term_spreads_code_usage() -> None:
    check_entropy_spreads_usage("lfq", at_least=15)  # 22 seen, against 1 without the term


def test_data_dependent_start() -> None:
    check_data_dependent_start("lfq")


def test_recipe_builds_lfq() -> None:
    check_recipe("lfq")


def test_bits_round_trip_and_place_values() -> None:
    every = torch.arange(512)
    bits = indices_to_bits(every, 9)
    assert torch.equal(bits_to_indices(bits), every)
    assert indices_to_bits(torch.tensor(0b100000001), 9).tolist() == [True] + [False] * 7 + [True]


def test_codes_are_plus_minus_one_of_each_projected_dimension() -> None:
    q = LookupFreeQuantizer(QuantizerConfig(kind="lfq", codebook_size=16, code_dim=4)).eval()
    with torch.no_grad():  # project_in the identity: the code is z's own sign pattern
        q.project_in.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        q.project_in.bias.zero_()
    z = torch.tensor([0.3, -2.0, 1e-6, 5.0]).view(1, 4, 1, 1)
    assert int(q.encode(z)) == 0b1011
    assert q.code_vectors(q.encode(z)).tolist() == [[[[1.0, -1.0, 1.0, 1.0]]]]
    assert int(q.encode(torch.zeros(1, 4, 1, 1))) == 0  # 0 counts as -


def test_candidate_ties_are_deterministic_lower_dimension_first() -> None:
    # Equal margins: the single flips come in dimension order (dimension 0, the top bit, first).
    masks = nearest_flips(torch.full((1, 4), 0.5), 5)
    assert masks.tolist() == [[0, 0b1000, 0b0100, 0b0010, 0b0001]]
    # Unequal margins: flip order follows cost, a pair beats a costlier single flip.
    masks = nearest_flips(torch.tensor([[0.1, 0.9, 0.2, 0.25]]), 6)
    assert masks.tolist() == [[0, 0b1000, 0b0010, 0b0001, 0b1010, 0b1001]]
    # A third single flip (0.25) beats the pair of the two cheapest (0.3): 4 patterns need 3 bits.
    assert nearest_flips(torch.tensor([[0.1, 0.2, 0.25]]), 4).tolist() == [[0, 0b100, 0b010, 0b001]]
    every = list(itertools.chain.from_iterable(nearest_flips(torch.rand(3, 5), 32).tolist()))
    assert sorted(every) == sorted(list(range(32)) * 3)  # k = K: every pattern once


def test_options_of_vq_are_refused() -> None:
    for bad in ({"lookup_dim": 4}, {"l2_normalize": True}):
        with pytest.raises(ConfigError, match="options of vq"):
            make("lfq", **bad)


def test_two_processes_match_one(tmp_path: Path) -> None:
    check_ddp("lfq", tmp_path)


def test_end_to_end(tmp_path: Path) -> None:
    check_end_to_end("lfq", tmp_path)
