"""vqkit prior train / prior eval / sample / complete through ``main(argv)`` on a tiny run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqkit.cli import main
from vqkit.pipeline import train
from vqkit.priors import load_prior, prior_exists
from vqkit.priors.checkpoint import model_fingerprint
from vqkit.runs.results import read_result

from .conftest import smooth_images, tiny_run_config

TINY_PRIOR = ["--set", "model.width=16", "--set", "model.layers=1", "--set", "model.heads=2",
              "--set", "train.batch_size=16", "--set", "train.warmup_steps=2", "--set", "train.log_every=5",
              "--set", "train.eval_every=10", "--set", "train.checkpoint_every=10"]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """A tiny VQ-VAE (16x16 images -> 4x4 grids, K=16) on labelled data, with a trained prior."""
    root = tmp_path_factory.mktemp("prior_cli")
    data = root / "data.npz"
    np.savez(data, images=smooth_images(96), labels=np.arange(96) % 3, class_names=np.array(["a", "b", "c"]))
    run = root / "run"
    train(tiny_run_config(str(data), max_steps=4), run, progress=False)
    assert main(["prior", "train", str(run), "--max-steps", "20", "--no-progress", *TINY_PRIOR]) == 0
    return run


def test_prior_train_writes_its_files(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("prior.safetensors", "prior_config.json", "prior_train_state.pt", "prior_metrics.jsonl",
                 "prior_eval.json"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert len(list(run_dir.glob("codes_*.npz"))) == 1
    doc = json.loads((run_dir / "prior_config.json").read_text())
    assert doc["format"] == "vqkit-prior" and doc["format_version"] == 1
    assert doc["model_fingerprint"] == model_fingerprint(run_dir)
    assert doc["prior"]["grid"] == [4, 4] and doc["prior"]["codebook_size"] == 16
    assert doc["prior"]["num_classes"] == 3 and doc["class_names"] == ["a", "b", "c"]
    assert doc["data"]["num_val"] == 5 and doc["data"]["num_train"] == 91  # 5 % held out
    ev = read_result(run_dir / "prior_eval.json", "prior_eval").data
    assert ev["log2_codebook_size"] == 4.0 and ev["num_grids"] == 5
    cal = doc["calibration"]  # fitted on the held-out grids at the end, and saved in the weights
    assert cal["data"] == "holdout" and cal["num_grids"] == 5
    assert cal["bits_per_code_calibrated"] <= cal["bits_per_code_raw"]
    assert float(load_prior(run_dir).logit_scale) == pytest.approx(cal["logit_scale"])
    assert ev["nll_bits_per_code"] == pytest.approx(cal["bits_per_code_calibrated"], abs=1e-4)
    assert prior_exists(run_dir)
    assert main(["prior", "train", str(run_dir), "--max-steps", "1"]) == 1
    assert "already holds a prior" in capsys.readouterr().err


def test_codes_are_cached_per_model(run_dir: Path) -> None:
    from vqkit.priors import load_codes
    from vqkit.runs import Run

    (cache,) = run_dir.glob("codes_*.npz")
    stamp = cache.stat().st_mtime_ns
    spec = json.loads((run_dir / "prior_config.json").read_text())["data"]["spec"]
    run = Run.load(run_dir)
    codes = load_codes(run, spec)
    assert cache.stat().st_mtime_ns == stamp  # reused, not encoded again
    images = list(np.load(spec)["images"])
    assert np.array_equal(codes.indices, np.stack(run.encode(images)))
    assert np.array_equal(codes.labels, np.arange(96) % 3) and codes.class_names == ("a", "b", "c")


def test_prior_resume_continues(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = load_prior(copy).state_dict()
    assert main(["prior", "train", str(copy), "--resume", "--max-steps", "25", "--no-progress"]) == 0
    rows = [json.loads(ln) for ln in (copy / "prior_metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 25
    assert [r["step"] for r in rows if r["type"] == "train"] == [5, 10, 15, 20, 25]
    after = load_prior(copy).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_an_interrupted_prior_training_exits_130_and_resumes(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import vqkit.priors.fit

    from .conftest import ctrl_c_at

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    ctrl_c_at(monkeypatch, vqkit.priors.fit, 23)
    assert main(["prior", "train", str(copy), "--resume", "--max-steps", "30", "--no-progress"]) == 130
    monkeypatch.undo()
    assert torch.load(copy / "prior_train_state.pt", weights_only=True)["step"] == 23  # stopped, saved
    assert main(["prior", "train", str(copy), "--resume", "--max-steps", "30", "--no-progress"]) == 0
    assert torch.load(copy / "prior_train_state.pt", weights_only=True)["step"] == 30


def test_resuming_a_finished_prior_changes_no_file(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A finished training resumed to the same step (a rebuild script run again) must leave the prior
    as it was: saving it again and refitting its calibration would give it another fingerprint, and
    the .vqk files coded with it would no longer decode."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    names = ["prior.safetensors", "prior_config.json", "prior_train_state.pt", "prior_metrics.jsonl",
             "prior_eval.json"]  # fmt: skip
    before = {n: (copy / n).read_bytes() for n in names}
    capsys.readouterr()
    assert main(["prior", "train", str(copy), "--resume", "--max-steps", "20", "--no-progress"]) == 0
    assert "prior already finished at step 20" in capsys.readouterr().out
    assert {n: (copy / n).read_bytes() for n in names} == before


def test_prior_calibrate_refits_the_scale(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    trained = json.loads((run_dir / "prior_config.json").read_text())
    assert main(["prior", "calibrate", str(copy)]) == 0  # the same held-out grids: the same scale
    assert "calibrated on 5 holdout grids" in capsys.readouterr().out
    doc = json.loads((copy / "prior_config.json").read_text())
    assert doc["calibration"]["logit_scale"] == pytest.approx(trained["calibration"]["logit_scale"], rel=1e-5)
    assert doc["argv"] == trained["argv"] and doc["step"] == trained["step"]  # still says how it was trained
    spec = trained["data"]["spec"]
    assert main(["prior", "calibrate", str(copy), "--data", spec, "--max-grids", "40"]) == 0
    doc = json.loads((copy / "prior_config.json").read_text())
    assert doc["calibration"]["num_grids"] == 40 and doc["calibration"]["data"] == spec
    assert float(load_prior(copy).logit_scale) == pytest.approx(doc["calibration"]["logit_scale"])
    # Resuming trains the raw logits and fits the scale again: the result matches a run that
    # was never calibrated by hand.
    plain = tmp_path / "plain"
    shutil.copytree(run_dir, plain)
    for folder in (copy, plain):
        assert main(["prior", "train", str(folder), "--resume", "--max-steps", "22", "--no-progress"]) == 0
    a, b = load_prior(copy).state_dict(), load_prior(plain).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_prior_init_from_starts_a_new_schedule_from_saved_weights(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    source = load_prior(run_dir).state_dict()
    # A vanishing learning rate: after one step the weights are still the source's, not a fresh init.
    argv = ["prior", "train", str(copy), "--init-from", str(run_dir), "--max-steps", "1", "--no-progress",
            "--set", "train.lr=1e-12", "--set", "train.warmup_steps=0"]  # fmt: skip
    assert main([*argv, "--overwrite"]) == 0
    tuned = load_prior(copy).state_dict()
    assert all(torch.allclose(tuned[k], source[k], atol=1e-8) for k in source)
    doc = json.loads((copy / "prior_config.json").read_text())
    assert doc["init_from"] == str(run_dir) and doc["step"] == 1 and doc["prior"]["width"] == 16
    rows = [json.loads(ln) for ln in (copy / "prior_metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 1  # a new schedule: counted from 0
    assert main(argv) == 1  # the copy holds a prior now: --overwrite is needed
    assert main([*argv, "--overwrite", "--resume"]) == 1
    assert main([*argv, "--overwrite", "--set", "model.layers=2"]) == 1
    # dropout is a regulariser, not part of the weights: it may change, and the weights carry over
    assert main([*argv, "--overwrite", "--set", "model.dropout=0.05"]) == 0
    doc = json.loads((copy / "prior_config.json").read_text())
    assert doc["prior"]["dropout"] == 0.05 and load_prior(copy).config.dropout == 0.05
    tuned = load_prior(copy).state_dict()
    assert all(torch.allclose(tuned[k], source[k], atol=1e-8) for k in source)


def test_prior_train_with_augmented_copies(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    from vqkit.priors import load_codes
    from vqkit.priors.data import augmented_copy, load_augmented_codes
    from vqkit.runs import Run

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    argv = ["prior", "train", str(copy), "--overwrite", "--max-steps", "2", "--no-progress", *TINY_PRIOR,
            "--set", "train.augment=2", "--set", "train.augment_shift=1"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((copy / "prior_config.json").read_text())
    assert doc["data"]["num_train"] == 91 and doc["data"]["num_augmented"] == 2 * 91  # no held-out copies
    assert doc["train"]["augment"] == 2 and doc["train"]["augment_shift"] == 1
    (cache,) = copy.glob("codes_*_aug2-shift1-flip1-seed0.npz")
    stamp = cache.stat().st_mtime_ns
    spec = doc["data"]["spec"]
    run = Run.load(copy)
    aug = load_augmented_codes(run, spec, copies=2, shift=1, flip=True, seed=0)
    assert cache.stat().st_mtime_ns == stamp  # reused, not encoded again
    assert len(aug) == 2 * 96 and np.array_equal(aug.labels, np.tile(np.arange(96) % 3, 2))
    images = list(np.load(spec)["images"])
    second = augmented_copy(images, shift=1, flip=True, seed=1)  # copy 1 of seed 0
    assert np.array_equal(aug.indices[96:], np.stack(run.encode(second)))
    assert not np.array_equal(aug.indices[96:], load_codes(run, spec).indices)  # the copies differ
    assert main(["prior", "train", str(copy), "--resume", "--max-steps", "4", "--no-progress"]) == 0
    resumed = json.loads((copy / "prior_config.json").read_text())
    assert resumed["step"] == 4 and resumed["data"]["num_augmented"] == 2 * 91
    assert cache.stat().st_mtime_ns == stamp  # the resumed run trains on the same cached copies
    assert main([*argv[:-4], "--set", "train.augment=-1"]) == 1


def test_prior_init_from_refuses_another_vq_vae(run_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    np.savez(data, images=smooth_images(48, seed=5), labels=np.arange(48) % 3)
    other = tmp_path / "other"
    train(tiny_run_config(str(data), max_steps=2, seed=9), other, progress=False)
    argv = ["prior", "train", str(other), "--init-from", str(run_dir), "--max-steps", "1", "--no-progress"]
    assert main(argv) == 1


def test_prior_eval_table_and_json(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = json.loads((run_dir / "prior_config.json").read_text())["data"]["spec"]
    out = tmp_path / "eval.json"
    assert main(["prior", "eval", str(run_dir), "--data", spec, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_grids"] == 96 and result["log2_codebook_size"] == 4.0
    assert 0 < result["unigram_entropy_bits_per_code"] <= 4.0
    assert result["bits_per_pixel"] == pytest.approx(result["nll_bits_per_grid"] / 256)
    assert "nll_bits_per_code_no_label" in result
    assert "prior NLL (bits/code)" in capsys.readouterr().out


def test_sample_writes_grid_and_images(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "grid.png"
    argv = ["sample", str(run_dir), "-n", "5", "-o", str(out), "--seed", "3", "--label", "b", "--top-k", "8"]
    assert main(argv) == 0
    assert "images/s" in capsys.readouterr().out
    files = sorted((tmp_path / "grid_samples").glob("*.png"))
    assert [f.name for f in files] == [f"{i:04d}.png" for i in range(5)]
    assert np.asarray(Image.open(files[0])).shape == (16, 16, 3)
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] >= 2 * 16 * 8  # two rows of 16-pixel images, enlarged 8x
    first = [np.asarray(Image.open(f)) for f in files]
    assert main([*argv[:5], str(tmp_path / "again.png"), *argv[6:]]) == 0  # same seed, same images
    again = [np.asarray(Image.open(f)) for f in sorted((tmp_path / "again_samples").glob("*.png"))]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert main(["sample", str(run_dir), "-n", "2", "-o", str(out), "--label", "zebra"]) == 1
    assert "unknown label" in capsys.readouterr().err


def test_complete_keeps_the_top_and_refuses_other_grids(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "image.png"
    Image.fromarray(smooth_images(1, seed=5)[0]).save(image)
    out = tmp_path / "complete.png"
    assert main(["complete", str(run_dir), str(image), "--keep-top", "2", "-n", "3", "-o", str(out)]) == 0
    picture = np.asarray(Image.open(out))
    assert picture.shape[1] >= 5 * 16 * 8  # original | reconstruction | 3 completions, enlarged 8x
    big = tmp_path / "big.png"
    Image.fromarray(smooth_images(1, size=24)[0]).save(big)
    assert main(["complete", str(run_dir), str(big), "--keep-top", "2", "-o", str(out)]) == 1
    assert "6x6 code grid; the prior models 4x4" in capsys.readouterr().err
    assert main(["complete", str(run_dir), str(image), "--keep-top", "5", "-o", str(out)]) == 1
    assert "--keep-top" in capsys.readouterr().err


def test_commands_need_a_prior(tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("prior*"))
    assert main(["sample", str(bare), "-n", "1", "-o", str(tmp_path / "x.png")]) == 1
    assert "has no prior" in capsys.readouterr().err
