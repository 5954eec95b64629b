"""Corruptions for denoising: statistics match their specs, seeds reproduce them, bad specs fail."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from vqkit.data import DataError
from vqkit.data.corruptions import parse_corruption
from vqkit.pipeline import train

from .conftest import tiny_run_config


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_sigma_and_reproducibility() -> None:
    x = torch.full((8, 3, 32, 32), 0.5)
    noisy = parse_corruption("gaussian:25")(x, g())
    assert (noisy - x).std().item() * 255 == pytest.approx(25, rel=0.05)
    assert torch.equal(noisy, parse_corruption("gaussian:25")(x, g()))
    assert not torch.equal(noisy, parse_corruption("gaussian:25")(x, g(1)))
    blind = parse_corruption("gaussian:5-50")(x, g())
    per_image = (blind - x).flatten(1).std(1) * 255
    assert per_image.min() >= 4 and per_image.max() <= 52 and per_image.std() > 1


def test_fractions_and_jpeg() -> None:
    x = torch.full((4, 3, 64, 64), 0.5)
    sp = parse_corruption("saltpepper:0.2")(x, g())
    changed = (sp != x).any(1).float().mean().item()
    assert changed == pytest.approx(0.2, abs=0.02)
    assert set(sp.unique().tolist()) == {0.0, 0.5, 1.0}
    masked = parse_corruption("mask:0.3")(x, g())
    assert (masked == 0).all(1).float().mean().item() == pytest.approx(0.3, abs=0.02)
    smooth = torch.rand(2, 3, 32, 32)
    jp = parse_corruption("jpeg:10")(smooth, g())
    assert jp.shape == smooth.shape and 0.01 < (jp - smooth).abs().mean() < 0.5
    both = parse_corruption("gaussian:10+mask:0.1")(x, g())
    assert (both == 0).all(1).float().mean() > 0.05


@pytest.mark.parametrize("spec", ["blur:3", "gaussian:", "gaussian:a", "mask:2", "gaussian:-5"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(DataError):
        parse_corruption(spec)


def test_denoising_scores_against_clean_images(tiny_npz: Path, tmp_path: Path) -> None:
    from vqkit.models import VQVAE
    from vqkit.runs import load_model
    from vqkit.training import evaluate

    model = VQVAE(tiny_run_config("x").model)
    clean, noisy = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    out = model(noisy, clean)
    expected = torch.nn.functional.mse_loss(out.reconstruction, clean)
    torch.testing.assert_close(out.losses["reconstruction"], expected)

    cfg = tiny_run_config(str(tiny_npz), max_steps=6)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, corruption="gaussian:50"))
    result = train(cfg, tmp_path / "run", progress=False)
    trained = load_model(tmp_path / "run")
    import numpy as np

    images = list(np.load(tiny_npz)["images"][:16])
    plain = evaluate(trained, images, with_ssim=False)
    corrupted = evaluate(trained, images, with_ssim=False, corruption=parse_corruption("gaussian:50"))
    assert corrupted["psnr"] != plain["psnr"]
    assert result.holdout["num_images"] > 0
