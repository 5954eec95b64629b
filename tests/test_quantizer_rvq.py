"""Residual VQ: S vq stages on successive residuals; prefixes decode, quantizer dropout trains every
prefix, stages past a sample's prefix learn nothing from it, and two processes hold one state."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from vqkit.config import ConfigError, ModelConfig, QuantizerConfig, RunConfig, load_config
from vqkit.data import to_float
from vqkit.models import VQVAE
from vqkit.pipeline import train
from vqkit.quantizers import ResidualVQ, VectorQuantizer, build_quantizer

from .conftest import gloo_group, smooth_image_set, smooth_images, tiny_run_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def make(seed: int = 0, **kw: object) -> ResidualVQ:
    torch.manual_seed(seed)
    cfg = {"kind": "rvq", "stages": 3, "codebook_size": 16, "code_dim": 4, **kw}
    return ResidualVQ(QuantizerConfig(**cfg))  # type: ignore[arg-type]


def warmed(q: ResidualVQ, z: torch.Tensor, steps: int = 5) -> ResidualVQ:
    """A few training passes: k-means on each stage's residuals, then EMA updates."""
    q.train()
    for _ in range(steps):
        q(z)
    return q.eval()


def rvq_config(spec: str, stages: int = 3, dropout: float = 0.5, **train_kw: object) -> RunConfig:
    cfg = tiny_run_config(spec, **train_kw)
    q = dataclasses.replace(cfg.model.quantizer, kind="rvq", stages=stages, stage_dropout=dropout)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantizer=q))


# ------------------------------------------------------------------------------------- the contract


def test_the_config_builds_rvq_and_checks_the_stage_count() -> None:
    q = build_quantizer(QuantizerConfig(kind="rvq", stages=2))
    assert isinstance(q, ResidualVQ) and q.stages == 2 and len(q.layers) == 2
    assert all(isinstance(layer, VectorQuantizer) for layer in q.layers)
    assert build_quantizer(QuantizerConfig()).stages == 1  # every other kind has one stage
    with pytest.raises(ConfigError, match=">= 2 for rvq"):
        QuantizerConfig(kind="rvq", stages=1)
    with pytest.raises(ConfigError, match="must be 1 for vq"):
        QuantizerConfig(kind="vq", stages=2)
    with pytest.raises(ConfigError, match="stage_dropout"):
        QuantizerConfig(kind="rvq", stages=2, stage_dropout=1.5)


def test_a_prefix_decodes_to_the_sum_of_its_stages_vectors() -> None:
    q = warmed(make(lookup_dim=3), torch.randn(8, 4, 6, 6))
    z = torch.randn(3, 4, 5, 6)
    idx = q.encode(z)
    assert idx.shape == (3, 3, 5, 6) and idx.dtype == torch.long
    layers = list(q.layers)
    for s in range(1, 4):
        want = sum(layers[i].indices_to_codes(idx[:, i]) for i in range(s))
        torch.testing.assert_close(q.indices_to_codes(idx[:, :s]), want, rtol=0, atol=1e-6)
    # each stage's code is the nearest to what the stages before it left
    residual = z.clone()
    for i, layer in enumerate(layers):
        assert torch.equal(idx[:, i], layer.encode(residual))
        residual = residual - layer.indices_to_codes(idx[:, i])
    for bad in (idx[:, :0], torch.cat([idx, idx[:, :1]], dim=1), idx[:, 0]):
        with pytest.raises(ValueError, match="1 <= s <= 3"):
            q.indices_to_codes(bad)
    with pytest.raises(NotImplementedError, match="residual VQ"):
        q.candidates(z, 2)


def test_eval_forward_encode_and_frozen_agree() -> None:
    q = warmed(make(), torch.randn(8, 4, 6, 6))
    z = torch.randn(4, 4, 5, 5)
    out = q(z)
    assert torch.equal(out.indices, q.encode(z))  # bit for bit: the residuals use exact code vectors
    torch.testing.assert_close(out.quantized, q.indices_to_codes(out.indices))
    frozen = q.frozen(z)
    assert torch.equal(frozen.indices, out.indices)
    assert torch.equal(frozen.quantized, q.indices_to_codes(out.indices))


def test_the_residual_shrinks_stage_by_stage_on_data_the_stages_were_fitted_to() -> None:
    g = torch.Generator().manual_seed(0)
    data = torch.randn(64, 4, 4, 4, generator=g) * torch.tensor([3.0, 1.0, 0.5, 0.2]).view(1, 4, 1, 1)
    q = warmed(make(stages=4), data, steps=10)
    idx = q.encode(data)
    errors = [float((data - q.indices_to_codes(idx[:, :s])).pow(2).sum(1).mean()) for s in range(1, 5)]
    assert errors[0] < float(data.pow(2).sum(1).mean())
    assert all(b < a for a, b in itertools.pairwise(errors)), errors


def test_without_stage_dropout_every_sample_uses_every_stage() -> None:
    q = make(stage_dropout=0.0)
    warmed(q, torch.randn(8, 4, 4, 4))
    q.train()
    z = torch.randn(16, 4, 4, 4)
    assert torch.equal(q.prefix_lengths(16, z.device), torch.full((16,), 3))
    before = copy.deepcopy(q)  # the codebooks the pass used (its EMA update moves them after)
    out = q(z)
    torch.testing.assert_close(out.quantized, before.indices_to_codes(out.indices), rtol=0, atol=1e-5)


def test_with_stage_dropout_a_sample_decodes_its_prefix_and_later_stages_learn_nothing_from_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    q = make(stages=2, stage_dropout=1.0, restart_dead=False)
    warmed(q, torch.randn(16, 4, 4, 4))
    q.train()
    draws = torch.stack([q.prefix_lengths(4000, torch.device("cpu")) for _ in range(2)])
    assert set(draws.unique().tolist()) == {1, 2}  # n ~ Uniform{1, 2}
    assert abs(float((draws == 1).float().mean()) - 0.5) < 0.03
    # Fix the draw: samples 0-3 keep one stage, samples 4-7 both.
    n = torch.tensor([1, 1, 1, 1, 2, 2, 2, 2])
    monkeypatch.setattr(q, "prefix_lengths", lambda b, device: n)
    second = q.layers[1]
    assert isinstance(second, VectorQuantizer)
    before = second.ema_cluster_size.clone()
    old = copy.deepcopy(q)  # the codebooks the pass used
    z = torch.randn(8, 4, 3, 3)
    out = q(z)
    one, both = old.indices_to_codes(out.indices[:, :1]), old.indices_to_codes(out.indices)
    torch.testing.assert_close(out.quantized[:4], one[:4], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.quantized[4:], both[4:], rtol=0, atol=1e-5)
    # stage 2's EMA counts moved by the codes of samples 4-7 only
    g = q.cfg.ema_decay
    counts = torch.bincount(out.indices[4:, 1].reshape(-1), minlength=16).float()
    torch.testing.assert_close(second.ema_cluster_size, g * before + (1 - g) * counts)


def test_quantizer_dropout_trains_the_decoder_on_every_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a training pass each sample's reconstruction, which the loss scores, is the decoder's
    output for the sum of its own prefix of stages: over the draws every prefix 1..S is trained."""
    torch.manual_seed(0)
    q = QuantizerConfig(kind="rvq", stages=3, codebook_size=8, code_dim=8, stage_dropout=0.5)
    model = VQVAE(ModelConfig(channels=16, res_channels=8, res_blocks=1, downsample=2, quantizer=q))
    images = to_float(torch.from_numpy(smooth_images(6, 16, seed=1)))
    model.train()
    model(images)  # k-means initialisation of every stage
    rvq = model.quantizer
    assert isinstance(rvq, ResidualVQ)
    n = torch.tensor([1, 2, 3, 1, 2, 3])
    monkeypatch.setattr(rvq, "prefix_lengths", lambda b, device: n)
    before = copy.deepcopy(model)  # the codebooks this pass uses
    out = model(images)
    before.eval()
    for i in range(6):
        want = before.decode(before.quantizer.indices_to_codes(out.indices[i : i + 1, : int(n[i])]))
        torch.testing.assert_close(out.reconstruction[i : i + 1], want, rtol=0, atol=1e-4)
    # the gradient reaches the decoder from every sample's prefix
    out.losses["reconstruction"].backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_float32_under_bfloat16_autocast() -> None:
    q = make().train()
    z = torch.randn(2, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z.bfloat16())
        codes = q.indices_to_codes(out.indices)
    assert out.quantized.dtype == torch.float32 and codes.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out.losses.values())


def test_the_recipes_load() -> None:
    cfg = load_config(RECIPES / "cifar10-rvq.json")
    q = cfg.model.quantizer
    assert (q.kind, q.stages, q.codebook_size, cfg.model.downsample, cfg.data.image_size) == (
        "rvq",
        3,
        8,
        4,
        32,
    )
    assert q.stages * np.log2(q.codebook_size) == 9  # 9 bits per position
    base = load_config(RECIPES / "cifar10.json").model
    assert (cfg.model.channels, cfg.model.res_blocks, cfg.model.res_channels) == (
        base.channels, base.res_blocks, base.res_channels,
    )  # fmt: skip
    ladder = load_config(RECIPES / "cifar10-rvq-ladder.json").model.quantizer
    assert (ladder.kind, ladder.stages, ladder.codebook_size) == ("rvq", 4, 512)
    assert isinstance(VQVAE(cfg.model).quantizer, ResidualVQ)


# ---------------------------------------------------------------------------------- two processes

STEPS = 8


def _train_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    with gloo_group(rank, world, init_file):
        torch.set_num_threads(1)
        state: dict[str, torch.Tensor] = {}

        def capture(step: int, model: VQVAE) -> None:
            if step == STEPS:
                state.update({k: v.detach().clone() for k, v in model.state_dict().items()})

        cfg = rvq_config("test", max_steps=STEPS, batch_size=16, log_every=4, eval_every=1000)
        q = dataclasses.replace(cfg.model.quantizer, restart_every=3, dead_threshold=0.5)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantizer=q))
        torch.manual_seed(rank)  # the ranks' draws of prefixes differ; their states must not
        train(cfg, Path(out_dir) / "run", progress=False, data=smooth_image_set(64), on_step=capture)
        torch.save(state, Path(out_dir) / f"rank{rank}.pt")


def test_two_processes_hold_the_same_stages_bit_for_bit(tmp_path: Path) -> None:
    mp.spawn(_train_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert {f"quantizer.layers.{s}.codebook" for s in range(3)} <= set(r0)
    assert sum(int(r0[f"quantizer.layers.{s}.restarts_total"]) for s in range(3)) > 0  # restarts ran
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
