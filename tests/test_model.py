"""The VQ-VAE model: construction, shapes for any image size, save/load, a few training steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vqkit import VQVAE
from vqkit import runs as ckpt
from vqkit.config import ModelConfig, RunConfig
from vqkit.quantizers import NO_CODE, NoCodesError, VectorQuantizer
from vqkit.runs import RunError

from .conftest import smooth_images, tiny_model_config


def test_article_example_trains_and_loss_falls() -> None:
    torch.manual_seed(0)
    model = VQVAE(codebook_size=64, latent_dim=32)
    assert model.codebook_size == 64 and model.config.quantizer.code_dim == 32
    x = torch.from_numpy(smooth_images(32)).permute(0, 3, 1, 2).float() / 255
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    losses = []
    for _ in range(25):
        out = model(x)
        opt.zero_grad()
        out.losses["total"].backward()
        opt.step()
        losses.append(float(out.losses["total"].detach()))
    assert out.indices.shape == (32, 4, 4)
    assert min(losses[-5:]) < 0.8 * losses[0]


@pytest.mark.parametrize("downsample", [2, 4, 8])
def test_any_image_size_round_trips_shape(downsample: int) -> None:
    model = VQVAE(ModelConfig(channels=16, res_channels=8, downsample=downsample)).eval()
    x = torch.rand(2, 3, 30, 45)
    rec = model.reconstruct(x)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1
    idx = model.encode(x)
    assert idx.shape == (2, -(-30 // downsample), -(-45 // downsample))
    assert model.decode_indices(idx, (30, 45)).shape == x.shape


def test_gradient_reaches_encoder_through_quantizer() -> None:
    model = VQVAE(tiny_model_config()).train()
    out = model(torch.rand(4, 3, 16, 16))
    out.losses["reconstruction"].backward()  # reconstruction alone: only the STE path reaches z
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_loss_terms_and_weights() -> None:
    cfg = tiny_model_config(beta=0.5, ema=False, codebook_weight=2.0)
    model = VQVAE(ModelConfig(**{**cfg.__dict__, "reconstruction_weight": 3.0}))
    out = model(torch.rand(2, 3, 16, 16))
    assert set(out.losses) == {"reconstruction", "commitment", "codebook", "total"}
    # codebook term = 2 * mse, commitment = 0.5 * the same mse (forward values are equal)
    torch.testing.assert_close(out.losses["codebook"], 4 * out.losses["commitment"])
    total = sum(v for k, v in out.losses.items() if k != "total")
    torch.testing.assert_close(out.losses["total"], total)


def test_plain_autoencoder_option() -> None:
    model = VQVAE(tiny_model_config(enabled=False))
    assert not model.quantizer.discrete and model.quantizer.codebook_size is None
    x = torch.rand(2, 3, 16, 16)
    out = model(x)
    assert set(out.losses) == {"reconstruction", "total"}
    assert bool((out.indices == NO_CODE).all()) and out.indices.shape == (2, 4, 4)
    # The decoder sees the encoder output itself: no codes in between.
    torch.testing.assert_close(out.reconstruction, model.decode(model.encode_latents(x)))
    out.losses["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    frozen = model(x, frozen_codes=True)
    torch.testing.assert_close(frozen.reconstruction, out.reconstruction)
    with pytest.raises(NoCodesError, match="quantization disabled"):
        model.encode(torch.rand(1, 3, 16, 16))
    with pytest.raises(NoCodesError, match="quantization disabled"):
        model.decode_indices(torch.zeros((1, 4, 4), dtype=torch.long))


def test_a_plain_autoencoder_saved_with_an_unused_codebook_loads(tmp_path: Path) -> None:
    """Plain autoencoders used to carry an unused vector quantizer, whose tensors their weights files
    hold: such a file still loads, and gives the same reconstructions."""
    torch.manual_seed(0)
    cfg = tiny_model_config(enabled=False)
    model = VQVAE(cfg).eval()
    old = {
        **model.state_dict(),
        **{f"quantizer.{k}": v for k, v in VectorQuantizer(cfg.quantizer).state_dict().items()},
    }
    ckpt.save_config(tmp_path, RunConfig(model=cfg))
    save_file(old, str(tmp_path / "model.safetensors"))
    loaded = ckpt.load_model(tmp_path)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    # A key the model does not know outside the quantizer is still refused.
    save_file({**old, "decoder.extra": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(RunError, match="does not match"):
        ckpt.load_model(tmp_path)


def test_save_load_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VQVAE(tiny_model_config()).train()
    model(torch.rand(8, 3, 16, 16))  # k-means init + one EMA update change the buffers
    ckpt.save_config(tmp_path, RunConfig(model=model.config))
    ckpt.save_model(tmp_path, model)
    loaded = ckpt.load_model(tmp_path)
    model.eval()
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(model.reconstruct(x), loaded.reconstruct(x))
    assert torch.equal(model.encode(x), loaded.encode(x))
    assert bool(loaded.quantizer.initialized)


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not found"):
        ckpt.load_model(tmp_path / "nope")
    with pytest.raises(RunError, match=r"config\.json is missing"):
        ckpt.load_model(tmp_path)
    ckpt.save_config(tmp_path, RunConfig(model=tiny_model_config()))
    with pytest.raises(RunError, match="no trained weights"):
        ckpt.load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunError, match="cannot read"):
        ckpt.load_model(tmp_path)
    # weights from a different architecture than the config describes
    other = VQVAE(tiny_model_config(codebook_size=32))
    ckpt.save_model(tmp_path, other)
    with pytest.raises(RunError):
        ckpt.load_model(tmp_path)
