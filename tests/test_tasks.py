"""Tasks on a tiny trained run: denoising, features, probes, retrieval (vqkit.tasks and their CLIs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqkit.cli import main
from vqkit.data import load_dataset, to_float
from vqkit.pipeline import train
from vqkit.runs import Run
from vqkit.runs.results import read_result
from vqkit.tasks.denoise import add_noise, denoise_images, quality
from vqkit.tasks.features import code_histograms, extract_features
from vqkit.tasks.probe import ProbeSettings, run_probes
from vqkit.tasks.retrieval import rank

from .conftest import smooth_images, tiny_run_config

TINTS = np.array([[1.0, 0.15, 0.15], [0.15, 1.0, 0.15], [0.15, 0.15, 1.0]])  # class k: one dominant colour


def tinted_npz(path: Path, n: int, seed: int, size: int = 16) -> Path:
    """n smooth images in 3 classes told apart by colour (linearly separable by construction)."""
    labels = np.arange(n) % 3
    images = (smooth_images(n, size, seed).astype(np.float64) * TINTS[labels][:, None, None]).round()
    np.savez(path, images=images.astype(np.uint8), labels=labels, class_names=np.array(["r", "g", "b"]))
    return path


def make_run(root: Path, data: Path, **data_changes: object) -> Path:
    """A tiny run (16 codes, f = 4) trained for 12 steps on ``data``."""
    cfg = tiny_run_config(str(data))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data_changes))  # type: ignore[arg-type]
    train(cfg, root, progress=False)
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    tinted_npz(root / "train.npz", 60, seed=0)
    tinted_npz(root / "test.npz", 30, seed=1)
    return root


@pytest.fixture(scope="module")
def run_dir(data_dir: Path) -> Path:
    """Trained corrupted -> clean (Gaussian noise), so it is a denoising run too."""
    return make_run(data_dir / "run", data_dir / "train.npz", corruption="gaussian:25")


@pytest.fixture(scope="module")
def ae_dir(data_dir: Path) -> Path:
    cfg = tiny_run_config(str(data_dir / "train.npz"), max_steps=4)
    q = dataclasses.replace(cfg.model.quantizer, enabled=False)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantizer=q))
    train(cfg, data_dir / "ae", progress=False)
    return data_dir / "ae"


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.squeeze(2) if array.shape[2] == 1 else array).save(path)


# ---------------------------------------------------------------------------------------- denoise


def test_denoise_cli_keeps_sizes_and_names(run_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inputs = {"sub/a.png": (21, 27, 3), "b.png": (17, 33, 3), "c.bmp": (9, 5, 1), "sub/deep/d.png": (4, 4, 3)}
    for name, shape in inputs.items():
        _save(tmp_path / "in" / name, rng.integers(0, 256, shape, dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["denoise", str(run_dir), str(tmp_path / "in"), "-o", str(out)]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["b.png", "c.png", "sub/a.png", "sub/deep/d.png"]
    run = Run.load(run_dir)
    for name, (h, w, _) in inputs.items():
        result = np.asarray(Image.open(out / Path(name).with_suffix(".png")))
        assert result.shape == (h, w, 3)
        original = load_dataset(tmp_path / "in" / name, channels=3).images[0]
        np.testing.assert_array_equal(result, run.reconstruct([original])[0])  # the model's own output


def test_denoise_cli_single_file_and_clear_errors(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _save(tmp_path / "noisy.png", np.full((13, 11, 3), 128, np.uint8))
    assert main(["denoise", str(run_dir), str(tmp_path / "noisy.png"), "-o", str(tmp_path / "x.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "x.png")).shape == (13, 11, 3)
    two = [str(tmp_path / "noisy.png"), str(tmp_path / "x.png")]
    assert main(["denoise", str(run_dir), *two, "-o", str(tmp_path / "y.png")]) == 1
    assert "give a folder" in capsys.readouterr().err
    assert main(["denoise", str(run_dir), *two, str(tmp_path / "noisy.png"), "-o", str(tmp_path / "o")]) == 1
    assert "both be written" in capsys.readouterr().err


def test_denoise_batching_does_not_change_results(run_dir: Path) -> None:
    run = Run.load(run_dir)
    images = [*smooth_images(6, 24, seed=3), smooth_images(1, 16, seed=4)[0]]
    one_by_one = denoise_images(run, images, max_pixels=1)
    batched = denoise_images(run, images)
    assert [a.shape for a in batched] == [im.shape for im in images]
    for a, b in zip(one_by_one, batched, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # float summation order only


def test_gaussian_noise_has_the_stated_sigma() -> None:
    clean = [np.full((64, 64, 3), 128, np.uint8)] * 4  # mid-grey: clipping never happens
    noisy = add_noise(clean, "gaussian:25", seed=1)
    residual = np.stack(noisy).astype(float) - 128
    assert abs(residual.std() - 25) < 0.5 and abs(residual.mean()) < 0.5  # 49k samples: SE ~ 0.1
    assert quality(clean, noisy)["psnr"] == pytest.approx(20 * np.log10(255 / 25), abs=0.1)
    assert np.array_equal(np.stack(add_noise(clean, "gaussian:25", seed=1)), np.stack(noisy))
    assert not np.array_equal(np.stack(add_noise(clean, "gaussian:25", seed=2)), np.stack(noisy))
    assert quality(clean, clean) == {"psnr": 100.0, "ssim": 1.0}


# --------------------------------------------------------------------------------------- features


def test_features_match_the_models_codes(run_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    run = Run.load(run_dir)
    data = load_dataset(data_dir / "test.npz")
    out = tmp_path / "features.npz"
    assert main(["features", str(run_dir), "--data", str(data_dir / "test.npz"), "-o", str(out)]) == 0
    z = np.load(out)
    n, k = len(data), run.model.codebook_size
    assert z["indices"].shape == (n, 4, 4) and z["histograms"].shape == (n, k)
    np.testing.assert_array_equal(z["indices"], np.stack(run.encode(data.images)))
    np.testing.assert_allclose(z["histograms"].sum(1), 1.0)
    counts = np.stack([np.bincount(g.reshape(-1), minlength=k) for g in z["indices"]])
    np.testing.assert_allclose(z["histograms"], counts / 16)
    with run.inference():  # encoder output as Run computes it (its precision and memory format)
        x = to_float(torch.from_numpy(data.as_array())).contiguous(memory_format=torch.channels_last)
        latents = run.model.encode_latents(x).float()
    np.testing.assert_allclose(z["latent_mean"], latents.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z["latent_max"], latents.amax((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(z["labels"], data.labels)


def test_features_of_mixed_sizes_and_plain_autoencoder(run_dir: Path, ae_dir: Path, data_dir: Path) -> None:
    images = [smooth_images(1, 16)[0], smooth_images(1, 20)[0][:, :12]]
    data = dataclasses.replace(load_dataset(data_dir / "test.npz", max_images=2), images=images)
    feats = extract_features(Run.load(run_dir), data)
    assert feats.indices is not None and [g.shape for g in feats.indices] == [(4, 4), (5, 3)]
    assert feats.histograms is not None and np.allclose(feats.histograms.sum(1), 1.0)
    ae = extract_features(Run.load(ae_dir), load_dataset(data_dir / "test.npz"))
    assert ae.histograms is None and ae.indices is None and ae.latents.shape == (30, 16)


def test_code_histograms_count_every_position() -> None:
    idx = torch.tensor([[[0, 1], [1, 3]], [[2, 2], [2, 2]]])
    expected = torch.tensor([[0.25, 0.5, 0.0, 0.25], [0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    assert torch.equal(code_histograms(idx, 4), expected)


# ------------------------------------------------------------------------------------------ probe


def test_probe_separates_separable_classes(run_dir: Path, data_dir: Path) -> None:
    run = Run.load(run_dir)
    train_set, test_set = load_dataset(data_dir / "train.npz"), load_dataset(data_dir / "test.npz")
    result = run_probes(run, train_set, test_set, ProbeSettings(k=5, pixel_size=4))
    assert set(result["results"]) == {"codes", "latents", "pixels"}
    assert result["chance"] == pytest.approx(1 / 3)
    for kind in ("codes", "latents", "pixels"):
        assert result["results"][kind]["linear"] >= 0.9, (kind, result)
    assert result["results"]["latents"]["knn"] >= 0.9
    assert result["results"]["codes"]["knn"] >= 0.85
    assert result["results"]["pixels"]["dims"] == 3 * 4 * 4


def test_probe_cli_writes_json_into_the_run(
    ae_dir: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "probe.json"
    argv = [
        "probe",
        str(ae_dir),
        "--train",
        str(data_dir / "train.npz"),
        "--test",
        str(data_dir / "test.npz"),
        "--json",
        str(out),
        "--max-train",
        "45",
        "--pixel-size",
        "4",
    ]
    assert main(argv) == 0
    result = read_result(out, "probe").data
    assert result == read_result(ae_dir / "probe.json", "probe").data
    assert set(result["results"]) == {"latents", "pixels"} and result["num_train"] == 45
    assert "quantization is disabled" in capsys.readouterr().out
    unlabelled = tmp_path / "nolabels.npz"
    np.savez(unlabelled, images=smooth_images(8))
    argv = ["probe", str(ae_dir), "--train", str(unlabelled), "--test", str(unlabelled)]
    assert main(argv) == 1
    assert "no labels" in capsys.readouterr().err


# -------------------------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("metric", ["cosine", "intersection"])
def test_similar_finds_the_query_itself_first(
    run_dir: Path, data_dir: Path, tmp_path: Path, metric: str
) -> None:
    data = load_dataset(data_dir / "test.npz")
    _save(tmp_path / "query.png", data.images[7])
    out, js = tmp_path / "similar.png", tmp_path / "similar.json"
    argv = [
        "similar",
        str(run_dir),
        str(tmp_path / "query.png"),
        "--data",
        str(data_dir / "test.npz"),
        "-k",
        "4",
        "-o",
        str(out),
        "--json",
        str(js),
        "--metric",
        metric,
    ]
    assert main(argv) == 0
    results = read_result(js, "similar").data["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    assert results[0]["index"] == 7 and results[0]["similarity"] == pytest.approx(1.0)
    sims = [r["similarity"] for r in results]
    assert sims == sorted(sims, reverse=True)
    picture = np.asarray(Image.open(out))
    assert picture.shape[1] == (2 + 5 * (16 + 2)) * 6  # query + 4 neighbours, 2 px gaps, scaled by 6


def test_rank_breaks_histogram_ties_with_latents() -> None:
    hists = np.array([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]])
    latents = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    order, scores = rank(np.array([0.5, 0.5]), hists, 3, "cosine", np.array([0.0, 1.0]), latents)
    assert order.tolist() == [1, 0, 2] and scores[0] == pytest.approx(1.0)
    order, _ = rank(np.array([0.5, 0.5]), hists, 2, "intersection")
    assert order.tolist() == [0, 1]  # equal scores keep data order without a tie-break


def test_denoise_eval_scores_noisy_and_denoised_against_clean(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Mid-range images (64..191), so noise of sigma 25 is almost never clipped at 0 or 255.
    clean = 64 + smooth_images(16, seed=6) // 2
    np.savez(tmp_path / "clean.npz", images=clean)
    argv = ["denoise", str(run_dir), "--eval", str(tmp_path / "clean.npz"), "--sigma", "15,25",
            "--seed", "3", "--json", str(tmp_path / "d.json")]  # fmt: skip
    assert main(argv) == 0
    data = read_result(run_dir / "denoise.json", "denoise").data
    assert read_result(tmp_path / "d.json", "denoise").data == data
    assert [r["sigma"] for r in data["results"]] == [15.0, 25.0] and data["num_images"] == 16
    sigma25 = data["results"][1]
    # 8-bit noisy images at sigma 25: PSNR = 20 log10(255 / 25) = 20.17 dB (12k samples: SE ~ 0.06 dB).
    assert sigma25["noisy"]["psnr"] == pytest.approx(20 * np.log10(255 / 25), abs=0.2)
    assert data["results"][0]["noisy"]["psnr"] > sigma25["noisy"]["psnr"] + 3
    # Reference: the same seeded noise, denoised by the run, scored against the clean images.
    run, images = Run.load(run_dir), list(clean)
    noisy = add_noise(images, "gaussian:25", seed=3)
    denoised = denoise_images(run, noisy)
    expected = quality(images, denoised)
    assert sigma25["denoised"]["psnr"] == pytest.approx(expected["psnr"], abs=1e-9)
    assert sigma25["denoised"]["ssim"] == pytest.approx(expected["ssim"], abs=1e-9)
    assert quality(noisy, denoised)["psnr"] != pytest.approx(expected["psnr"], abs=1e-3)  # not against noisy
    assert f"{sigma25['denoised']['psnr']:.2f}" in capsys.readouterr().out
    picture = np.asarray(Image.open(run_dir / "denoise_examples.png"))
    assert picture.shape[0] == (2 + 3 * (16 + 2)) * 6  # clean, noisy, denoised rows, scaled by 6
    assert main(["denoise", str(run_dir), "--eval", str(tmp_path / "clean.npz"), "--sigma", "25,0"]) == 1
    assert "--sigma values must lie in (0, 255]" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # measuring and denoising files are two uses: not both at once
        main(["denoise", str(run_dir), "--eval", str(tmp_path / "clean.npz"), "-o", str(tmp_path / "o")])
