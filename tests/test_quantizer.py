"""The quantizers: nearest codes, straight-through gradients, EMA, k-means, restarts; the identity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqkit.config import QuantizerConfig
from vqkit.metrics import CodebookUsage
from vqkit.quantizers import (
    NO_CODE,
    IdentityQuantizer,
    NoCodesError,
    VectorQuantizer,
    build_quantizer,
    kmeans,
    nearest_code,
)


def make(**kw: object) -> VectorQuantizer:
    cfg = QuantizerConfig(**{"codebook_size": 8, "code_dim": 4, "kmeans_init": False,  # type: ignore[arg-type]
                             "restart_dead": False, **kw})  # fmt: skip
    return VectorQuantizer(cfg)


def test_nearest_code_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    x, cb = torch.randn(500, 6, generator=g), torch.randn(37, 6, generator=g)
    brute = torch.cdist(x.double(), cb.double()).argmin(1)
    assert torch.equal(nearest_code(x, cb), brute)
    assert torch.equal(nearest_code(x, cb, chunk=64), brute)


def test_indices_to_codes_equals_quantized() -> None:
    for kw in ({}, {"lookup_dim": 2}, {"l2_normalize": True}):
        q = make(**kw).eval()
        z = torch.randn(3, 4, 5, 6)
        out = q(z)
        assert out.indices.shape == (3, 5, 6) and out.indices.dtype == torch.long
        torch.testing.assert_close(q.indices_to_codes(out.indices), out.quantized)
        assert torch.equal(q.encode(z), out.indices)


def test_quantized_is_nearest_codeword_per_position() -> None:
    q = make().eval()
    z = torch.randn(2, 4, 3, 3)
    out = q(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    expected = torch.cdist(flat, q.codebook).argmin(1).view(2, 3, 3)
    assert torch.equal(out.indices, expected)


def test_straight_through_gradient_reaches_input() -> None:
    q = make().train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z)
    target = torch.randn_like(out.quantized)
    F.mse_loss(out.quantized, target).backward()
    assert z.grad is not None
    # Straight-through: d quantized / d z is the identity, so the gradient equals d loss / d quantized.
    expected = 2 * (out.quantized.detach() - target) / target.numel()
    torch.testing.assert_close(z.grad, expected)


def test_codebook_loss_trains_codebook_without_ema() -> None:
    q = make(ema=False).train()
    out = q(torch.randn(2, 4, 3, 3))
    assert set(out.losses) == {"commitment", "codebook"}
    out.losses["codebook"].backward()
    assert q.codebook.grad is not None and q.codebook.grad.abs().sum() > 0


def test_ema_update_matches_hand_computation() -> None:
    decay, eps = 0.9, 1e-5
    q = make(ema_decay=decay, ema_epsilon=eps).train()
    k = 8
    cb0 = q.codebook.clone()
    z = torch.randn(2, 4, 3, 3)
    out = q(z)
    x = z.permute(0, 2, 3, 1).reshape(-1, 4)
    idx = out.indices.reshape(-1)
    onehot = F.one_hot(idx, k).double()  # (N, K)
    n_k = decay * torch.ones(k, dtype=torch.float64) + (1 - decay) * onehot.sum(0)
    m_k = decay * cb0.double() + (1 - decay) * onehot.t() @ x.double()
    total = n_k.sum()
    smoothed = (n_k + eps) / (total + k * eps) * total
    torch.testing.assert_close(q.codebook.double(), m_k / smoothed[:, None], rtol=1e-5, atol=1e-6)
    # The assignment used the codebook as it was before the update.
    assert torch.equal(idx, torch.cdist(x, cb0).argmin(1))


def test_kmeans_init_places_codes_on_data() -> None:
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 0, 0, 0], [-5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, -5.0, 0, 0]])
    x = centres.repeat_interleave(50, 0) + 0.01 * torch.randn(200, 4)
    found = kmeans(x, 4, iters=20)
    err = torch.cdist(centres, found).min(1).values
    assert (err < 0.1).all()
    q = make(codebook_size=4, kmeans_init=True).train()
    assert not bool(q.initialized)
    q(x.t().reshape(1, 4, 200, 1))
    assert bool(q.initialized)
    # every code sits near one data cluster, not at its random initial place
    assert (torch.cdist(q.codebook, centres).min(1).values < 0.2).all()


def test_dead_code_restart_revives_unused_codes() -> None:
    torch.manual_seed(0)
    q = make(restart_dead=True, restart_every=3, ema_decay=0.5, dead_threshold=0.1).train()
    q.codebook.data[2:] = 100.0  # six codes far from any data: never chosen
    q.ema_embed_sum.data[2:] = 100.0
    usage = CodebookUsage(8)
    for _ in range(3):
        usage.update(q(torch.randn(4, 4, 4, 4)).indices)
    assert usage.dead_codes >= 6  # before the restart those codes were unused
    assert int(q.restarts_total) >= 6
    assert (q.codebook.abs().max(1).values < 10).all()  # moved onto encoder outputs
    after = CodebookUsage(8)
    q.eval()
    after.update(q(torch.randn(64, 4, 4, 4)).indices)
    assert after.usage > usage.usage


def test_float32_under_autocast() -> None:
    q = make().train()
    z = torch.randn(2, 4, 3, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
    assert out.quantized.dtype == torch.float32
    assert q.codebook.dtype == torch.float32


def test_codebook_usage_metrics() -> None:
    u = CodebookUsage(4)
    u.update(torch.tensor([[0, 0], [1, 1]]))
    assert u.usage == 0.5 and u.dead_codes == 2
    assert abs(u.perplexity - 2.0) < 1e-9
    u.update(torch.tensor([2, 3, 2, 3]))
    assert u.usage == 1.0 and abs(u.perplexity - 4.0) < 1e-9


def test_frozen_gives_the_codes_without_touching_any_state() -> None:
    # In training mode forward moves the EMA codebook; frozen gives encode's codes and their vectors
    # (what the codec decodes), no loss terms, and leaves every buffer as it was.
    q = make(restart_dead=True, restart_every=1).train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    out = q.frozen(z)
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in before.items())
    assert torch.equal(out.indices, q.encode(z)) and out.losses == {}
    assert torch.equal(out.quantized, q.indices_to_codes(out.indices)) and not out.quantized.requires_grad


def test_the_config_chooses_the_quantizer() -> None:
    vq = build_quantizer(QuantizerConfig(codebook_size=8, code_dim=4))
    assert isinstance(vq, VectorQuantizer) and vq.discrete and vq.codebook_size == 8
    plain = build_quantizer(QuantizerConfig(codebook_size=8, code_dim=4, enabled=False))
    assert isinstance(plain, IdentityQuantizer) and not plain.discrete and plain.codebook_size is None


def test_the_identity_quantizer_meets_the_contract_without_codes() -> None:
    q = IdentityQuantizer().train()
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    out = q(z)
    assert out.quantized is z and out.losses == {}  # z unchanged, gradients reach it as they are
    assert out.indices.shape == (2, 3, 5) and out.indices.dtype == torch.long
    assert bool((out.indices == NO_CODE).all())
    assert q.frozen(z).quantized is z
    assert list(q.state_dict()) == [] and list(q.parameters()) == []  # nothing to save or train
    for ask in (lambda: q.encode(z), lambda: q.candidates(z, 2), lambda: q.indices_to_codes(out.indices)):
        with pytest.raises(NoCodesError, match="quantization disabled"):
            ask()


def test_every_configurable_kind_is_built_and_meets_the_contract() -> None:
    """quantizer.kind's choices (config.py) and the quantizers built for them stay one list."""
    import dataclasses

    from vqkit.config import QUANTIZER_KINDS
    from vqkit.quantizers import KINDS, build_quantizer

    assert set(KINDS) == set(QUANTIZER_KINDS)
    base = QuantizerConfig(codebook_size=8, code_dim=6, levels=(2, 2, 2))
    z = torch.randn(2, 6, 3, 4)
    for kind in QUANTIZER_KINDS:
        stages = 2 if kind == "rvq" else 1  # residual VQ: S >= 2 codes per position
        q = build_quantizer(dataclasses.replace(base, kind=kind, stages=stages)).eval()
        assert q.discrete and q.codebook_size == 8 and q.stages == stages, kind
        idx = q.encode(z)
        shape = (2, 3, 4) if stages == 1 else (2, stages, 3, 4)
        assert idx.shape == shape and idx.dtype == torch.int64 and 0 <= int(idx.min()) <= int(idx.max()) < 8
        torch.testing.assert_close(q.indices_to_codes(idx), q(z).quantized)
