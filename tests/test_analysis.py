"""Codebook pictures and usage, anomaly scores and AUROC (vqkit codebook / anomaly)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqkit.cli import main
from vqkit.data import load_dataset
from vqkit.pipeline import train
from vqkit.priors import CodePrior, PriorConfig, save_prior
from vqkit.runs import Run
from vqkit.runs.results import read_result
from vqkit.tasks.codebook import code_tiles

from .conftest import smooth_images, tiny_run_config


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained on smooth blobs, and a labelled test set: smooth (normal) and noise (anomalies)."""
    root = tmp_path_factory.mktemp("analysis")
    np.savez(root / "smooth.npz", images=smooth_images(64, seed=0))
    noise = np.random.default_rng(1).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    images = np.concatenate([smooth_images(32, seed=2), noise])
    labels = np.repeat([0, 1], [32, 16])
    np.savez(root / "mixed.npz", images=images, labels=labels, class_names=np.array(["smooth", "noise"]))
    train(tiny_run_config(str(root / "smooth.npz")), root / "run", progress=False)
    return root


# --------------------------------------------------------------------------------------- codebook


def test_codebook_tiles_in_usage_order(root: Path, tmp_path: Path) -> None:
    run_dir, out = root / "run", tmp_path / "codebook.png"
    argv = ["codebook", str(run_dir), "-o", str(out), "--data", str(root / "mixed.npz"), "--zoom", "1"]
    assert main([*argv, "--json", str(tmp_path / "cb.json")]) == 0
    doc = read_result(run_dir / "codebook.json", "codebook").data
    assert read_result(tmp_path / "cb.json", "codebook").data == doc
    run = Run.load(run_dir)
    data = load_dataset(root / "mixed.npz")
    grids = np.stack(run.encode(data.images))  # (48, 4, 4)
    counts = np.bincount(grids.reshape(-1), minlength=16)
    assert doc["counts"] == counts.tolist() and doc["num_images"] == 48
    assert doc["order"] == np.argsort(-counts, kind="stable").tolist()
    assert doc["codebook_usage"] == pytest.approx((counts > 0).mean())
    per_class = np.array(doc["per_class_counts"])
    assert per_class.shape == (2, 16) and per_class.sum(1).tolist() == [32 * 16, 16 * 16]
    assert doc["class_names"] == ["smooth", "noise"]

    # K tiles of f + 2 * (f / 2) = 8 px, 4 per row (ceil(sqrt(16))), 1 px gaps, most used first.
    picture = np.asarray(Image.open(out))
    assert picture.shape == (1 + 4 * 9, 1 + 4 * 9, 3)
    tiles = code_tiles(run, background=doc["order"][0])
    assert tiles.shape == (16, 8, 8, 3)
    for rank, code in enumerate(doc["order"]):
        r, c = divmod(rank, 4)
        np.testing.assert_array_equal(picture[1 + 9 * r : 9 + 9 * r, 1 + 9 * c : 9 + 9 * c], tiles[code])
    # Tile k is code k decoded at the centre of a 5x5 grid of the background code, cropped to 2 .. 18.
    grid = np.full((1, 5, 5), doc["order"][0])
    grid[0, 2, 2] = 5
    np.testing.assert_array_equal(tiles[5], run.decode(grid)[0, 6:14, 6:14])
    assert len({t.tobytes() for t in tiles}) > 1  # the tiles really depend on the code
    for name in ("codebook.png", "codebook_usage.png", "codebook_classes.png"):
        assert Image.open(run_dir / name).size[0] > 0


def test_codebook_defaults_to_the_runs_held_out_images(root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(root / "run", run_dir)
    assert main(["codebook", str(run_dir), "-o", str(tmp_path / "c.png")]) == 0
    doc = read_result(run_dir / "codebook.json", "codebook").data
    assert "held-out" in doc["data"] and doc["num_images"] == 6  # holdout 0.1 of 64 images
    assert sum(doc["counts"]) == 6 * 16 and "per_class_counts" not in doc


def test_codebook_refuses_a_plain_autoencoder(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_run_config(str(root / "smooth.npz"), max_steps=2)
    q = dataclasses.replace(cfg.model.quantizer, enabled=False)
    train(
        dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantizer=q)),
        tmp_path / "ae",
        progress=False,
    )
    assert main(["codebook", str(tmp_path / "ae"), "-o", str(tmp_path / "c.png")]) == 1
    assert "no codebook" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- anomaly


def test_anomaly_auroc_on_noise_among_smooth_images(root: Path, tmp_path: Path) -> None:
    run_dir, out = root / "run", tmp_path / "scores.json"
    argv = ["anomaly", str(run_dir), "--data", str(root / "mixed.npz"), "--anomaly-class", "noise"]
    assert main([*argv, "--json", str(out)]) == 0
    doc = read_result(out, "anomaly").data
    assert doc["auroc"]["reconstruction_mse"] > 0.9
    assert 0 <= doc["auroc"]["quantization_error"] <= 1  # reported; not reliable after 12 steps
    assert doc["num_anomalies"] == 16 and len(doc["per_image"]["reconstruction_mse"]) == 48
    assert doc["per_image"]["is_anomaly"] == [False] * 32 + [True] * 16
    assert "code_nll_bits" not in doc["auroc"] and any("no prior" in n for n in doc["notes"])
    summary = read_result(run_dir / "anomaly.json", "anomaly").data
    assert summary["auroc"] == doc["auroc"] and "per_image" not in summary
    # The same split named the other way round, by class number, gives the same AUROC.
    assert main(["anomaly", str(run_dir), "--data", str(root / "mixed.npz"), "--normal-classes", "0"]) == 0
    assert read_result(run_dir / "anomaly.json", "anomaly").data["auroc"] == doc["auroc"]
    # Reference: per-image MSE of the run's own reconstructions.
    run, data = Run.load(run_dir), load_dataset(root / "mixed.npz")
    recon = np.stack(run.reconstruct(data.images)).astype(float)
    expected = ((recon - data.as_array()) ** 2).reshape(48, -1).mean(1)
    np.testing.assert_allclose(doc["per_image"]["reconstruction_mse"], expected)


def test_anomaly_scores_code_likelihood_under_the_prior(root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(root / "run", run_dir)
    torch.manual_seed(0)
    prior = CodePrior(PriorConfig(codebook_size=16, grid=(4, 4), width=16, layers=1, heads=2)).eval()
    save_prior(run_dir, prior)
    out = tmp_path / "scores.json"
    argv = ["anomaly", str(run_dir), "--data", str(root / "mixed.npz"), "--json", str(out)]
    assert main(argv) == 0
    doc = read_result(out, "anomaly").data
    assert "auroc" not in doc and set(doc["scores"]) == {
        "reconstruction_mse",
        "quantization_error",
        "code_nll_bits",
    }
    grids = torch.from_numpy(np.stack(Run.load(run_dir).encode(load_dataset(root / "mixed.npz").images)))
    with torch.no_grad():
        expected = prior.nll_bits(grids).numpy() / 16
    np.testing.assert_allclose(doc["per_image"]["code_nll_bits"], expected, rtol=1e-5)


def test_anomaly_clear_errors(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["anomaly", str(root / "run")]
    assert main([*base, "--data", str(root / "smooth.npz"), "--anomaly-class", "1"]) == 1
    assert "has no labels" in capsys.readouterr().err
    assert main([*base, "--data", str(root / "mixed.npz"), "--anomaly-class", "cats"]) == 1
    assert "unknown class 'cats'" in capsys.readouterr().err
    assert main([*base, "--data", str(root / "mixed.npz"), "--normal-classes", "smooth,noise"]) == 1
    assert "both normal and anomalous" in capsys.readouterr().err
