"""The inference form of the decoder computes the same function as the trained one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vqkit import VQVAE
from vqkit import runs as ckpt
from vqkit.config import ModelConfig, QuantizerConfig, RunConfig
from vqkit.models.inference import FastDecoder, ParityConvTranspose2d
from vqkit.quantizers import NoCodesError
from vqkit.runs import Run

from .conftest import tiny_model_config


@pytest.mark.parametrize(("c_in", "c_out", "h", "w"), [(8, 3, 5, 7), (16, 12, 1, 1), (4, 1, 8, 8)])
def test_parity_form_equals_transposed_convolution(c_in: int, c_out: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
    x = torch.randn(3, c_in, h, w)
    with torch.no_grad():
        want, got = layer(x), ParityConvTranspose2d(layer)(x)
    assert got.shape == want.shape == (3, c_out, 2 * h, 2 * w)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_parity_form_refuses_other_geometry() -> None:
    with pytest.raises(ValueError, match="kernel-4"):
        ParityConvTranspose2d(nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1))


def _trained_model(cfg: ModelConfig) -> VQVAE:
    torch.manual_seed(1)
    model = VQVAE(cfg).train()
    model(torch.rand(16, cfg.in_channels, 16, 16))  # k-means initialisation: distinct codes
    for p in model.decoder.parameters():  # biases are zero at initialisation: make them count
        p.data.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize(
    "cfg",
    [
        tiny_model_config(),
        tiny_model_config(lookup_dim=4, l2_normalize=True),
        ModelConfig(
            in_channels=1,
            channels=16,
            res_channels=8,
            downsample=8,
            quantizer=QuantizerConfig(codebook_size=32, code_dim=8),
        ),
        dataclasses.replace(tiny_model_config(), outer_blocks=2),  # residual blocks at 8x8 pixels too
    ],
)
@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (1, 1)])
def test_fast_decoder_equals_decoder_of_looked_up_codes(cfg: ModelConfig, grid: tuple[int, int]) -> None:
    model = _trained_model(cfg)
    fast = FastDecoder.from_model(model, parity=True)
    assert any(isinstance(m, ParityConvTranspose2d) for m in fast.body)  # the image layer converted
    idx = torch.randint(0, model.codebook_size, (5, *grid))
    with torch.no_grad():
        want = model.decode(model.quantizer.indices_to_codes(idx))
        got = fast(idx)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        # The first layer alone, where the padding rows of the table matter most.
        codes = model.quantizer.indices_to_codes(idx)
        torch.testing.assert_close(fast.first_layer(idx), model.decoder.net[0](codes), atol=1e-5, rtol=1e-4)


def test_fast_decoder_is_a_snapshot_of_the_weights() -> None:
    model = _trained_model(tiny_model_config())
    fast = FastDecoder.from_model(model)
    idx = torch.randint(0, model.codebook_size, (2, 4, 4))
    with torch.no_grad():
        before = fast(idx)
        model.decoder.net[0].weight.add_(1.0)
        model.quantizer.codebook.add_(1.0)
        assert torch.equal(fast(idx), before)


def test_run_decode_and_reconstruct_match_the_model(tmp_path: Path) -> None:
    model = _trained_model(tiny_model_config())
    ckpt.save_config(tmp_path, RunConfig(model=model.config))
    ckpt.save_model(tmp_path, model)
    run = Run.load(tmp_path, precision="fp32")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (14, 19, 3), dtype=np.uint8) for _ in range(3)]  # not multiples of f
    codes = np.stack(run.encode(images))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        want = (model.decode_indices(torch.from_numpy(codes), (14, 19)) * 255).round().permute(0, 2, 3, 1)
        want_rec = (model.reconstruct(x) * 255).round().permute(0, 2, 3, 1)
    got = run.decode(codes, (14, 19))
    assert got.shape == (3, 14, 19, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.numpy().astype(int)).max() <= 1  # rounding ties only
    rec = np.stack(run.reconstruct(images))
    assert np.abs(rec.astype(int) - want_rec.numpy().astype(int)).max() <= 1


def _untrained(f: int, blocks: int, seed: int, outer: int = 0) -> FastDecoder:
    torch.manual_seed(seed)
    cfg = ModelConfig(channels=16, res_channels=8, res_blocks=blocks, downsample=f, outer_blocks=outer,
                      quantizer=QuantizerConfig(codebook_size=16, code_dim=4, kmeans_init=False))  # fmt: skip
    return FastDecoder.from_model(VQVAE(cfg).eval())


@pytest.mark.parametrize(
    ("f", "blocks", "outer"), [(2, 0, 0), (4, 2, 0), (8, 1, 0), (4, 3, 0), (4, 2, 1), (4, 0, 3), (8, 1, 2)]
)
def test_a_code_reaches_exactly_the_decoders_reach(f: int, blocks: int, outer: int) -> None:
    # An untrained decoder of each shape: a code changes pixels up to ``reach`` cells away, and none
    # beyond. A reach one too small leaves changed pixels outside; one too large finds the outer ring
    # unchanged. Residual blocks between the resolutions (``outer``) widen the upsampling's reach.
    fast = _untrained(f, blocks, f * 10 + blocks, outer)
    r = fast.reach
    if outer == 0:  # the first 3x3 convolution, one per residual block, the upsampling
        assert r == 1 + blocks + 1
    else:
        assert r > 1 + blocks + 1
    n = 2 * r + 5  # the code in the middle, two spare cells beyond its reach on every side
    c = n // 2
    grid = torch.randint(0, 16, (1, n, n))
    other = grid.clone()
    other[0, c, c] = (grid[0, c, c] + 1) % 16
    with torch.no_grad():
        moved = (fast(grid) - fast(other)).abs().amax(1)[0]  # (H, W)
    cells = moved.unflatten(0, (n, f)).unflatten(2, (n, f)).amax((1, 3))  # (n, n): per code cell
    dist = (torch.arange(n) - c).abs()
    ring = torch.maximum(dist[:, None], dist[None, :])  # Chebyshev distance from the changed code
    assert cells[ring > r].max() == 0
    assert cells[ring == r].max() > 0


CUTS = [(True, True, True, True), (False, True, True, False), (True, False, False, True),
        (False, False, True, False), (True, True, False, False)]  # fmt: skip


@pytest.mark.parametrize(("f", "blocks", "outer"), [(2, 0, 0), (4, 2, 0), (8, 1, 0), (4, 1, 2), (8, 0, 1)])
@pytest.mark.parametrize("cut", CUTS)
def test_a_window_decodes_what_the_whole_grid_decodes_there(
    f: int, blocks: int, outer: int, cut: tuple[bool, bool, bool, bool]
) -> None:
    """A window cut out of a grid decodes, on the cells at least ``reach`` cells in from its cut sides
    (all of it towards the grid's edges), the pixels of the whole grid's decode, and nothing more."""
    fast = _untrained(f, blocks, f + blocks, outer)
    r = fast.reach
    h, w = 4 * r + 6, 4 * r + 5
    grid = torch.randint(0, 16, (3, h, w))
    # The window: to the grid's edge on uncut sides, 1 and 2 cells short of it on cut ones.
    y0, y1 = (1 if cut[0] else 0), (h - 2 if cut[1] else h)
    x0, x1 = (2 if cut[2] else 0), (w - 1 if cut[3] else w)
    with torch.no_grad():
        whole = fast(grid)
        got = fast.decode_window(grid[:, y0:y1, x0:x1], cut)
    # Cells kept: r in from each cut side.
    cy0, cy1 = y0 + r * cut[0], y1 - r * cut[1]
    cx0, cx1 = x0 + r * cut[2], x1 - r * cut[3]
    want = whole[..., cy0 * f : cy1 * f, cx0 * f : cx1 * f]
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_a_window_too_small_for_its_cuts_is_refused() -> None:
    fast = _untrained(4, 1, 0)
    r = fast.reach
    with pytest.raises(ValueError, match="leaves no cell"):
        fast.decode_window(torch.zeros((1, 2 * r, 9), dtype=torch.long), (True, True, False, False))


def test_a_plain_autoencoder_has_no_fast_decoder() -> None:
    model = VQVAE(tiny_model_config(enabled=False))
    with pytest.raises(NoCodesError, match="no codes"):
        FastDecoder.from_model(model)
