"""Every subcommand through ``main(argv)``, as a user calls it, on a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqkit.cli import main
from vqkit.runs import Run
from vqkit.runs.results import read_result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .conftest import smooth_images

    root = tmp_path_factory.mktemp("cli")
    data = root / "data.npz"
    np.savez(data, images=smooth_images(64), labels=np.arange(64) % 2)
    run = root / "run"
    overrides = ["model.channels=16", "model.res_channels=8", "model.res_blocks=1",
                 "model.quantizer.codebook_size=16", "model.quantizer.code_dim=8",
                 "data.image_size=16", "train.batch_size=16", "train.warmup_steps=2"]  # fmt: skip
    argv = ["train", "--data", str(data), "-o", str(run), "--max-steps", "6", "--no-progress"]
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 0
    return run


def test_train_writes_run_and_refuses_overwrite(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (run_dir / "model.safetensors").is_file()
    data = json.loads((run_dir / "config.json").read_text())["config"]["data"]["spec"]
    assert main(["train", "--data", data, "-o", str(run_dir), "--max-steps", "1"]) == 1
    assert "already holds a trained run" in capsys.readouterr().err


def test_resume_continues(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    # --out: the old spelling of -o/--output, kept as an alias
    assert main(["train", "--out", str(copy), "--resume", "--max-steps", "8", "--no-progress"]) == 0
    rows = [json.loads(ln) for ln in (copy / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 8


def test_eval_prints_table_and_writes_json(run_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    spec = json.loads((run_dir / "config.json").read_text())["config"]["data"]["spec"]
    out = tmp_path / "eval.json"
    assert main(["eval", str(run_dir), "--data", spec, "--json", str(out)]) == 0
    result = read_result(out, "eval").data  # a versioned vqkit result, as the report reads it
    keys = {"psnr", "ssim", "mse", "codebook_usage", "perplexity", "dead_codes", "bpp_nominal",
            "num_images"}  # fmt: skip
    assert keys <= set(result) and result["num_images"] == 64
    assert result["bpp_nominal"] == pytest.approx(4 * 16 / 256)  # log2(16) bits x 16 codes / 256 px
    assert "PSNR" in capsys.readouterr().out


def test_reconstruct_any_size(run_dir: Path, tmp_path: Path) -> None:
    img = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (21, 27, 3), np.uint8)).save(img)
    out = tmp_path / "grid.png"
    assert main(["reconstruct", str(run_dir), str(img), "-o", str(out), "--zoom", "1"]) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] >= 2 * 21 and grid.shape[1] >= 27
    zoomed = tmp_path / "zoomed.png"
    assert main(["reconstruct", str(run_dir), str(img), "-o", str(zoomed), "--zoom", "3"]) == 0
    assert np.asarray(Image.open(zoomed)).shape[:2] == (3 * grid.shape[0], 3 * grid.shape[1])


def test_encode_decode_round_trip(run_dir: Path, tmp_path: Path) -> None:
    spec = json.loads((run_dir / "config.json").read_text())["config"]["data"]["spec"]
    codes = tmp_path / "codes.npz"
    assert main(["encode", str(run_dir), "--data", spec, "-o", str(codes)]) == 0
    z = np.load(codes)
    run = Run.load(run_dir)
    images = list(np.load(spec)["images"])
    expected = np.stack(run.encode(images))
    assert np.array_equal(z["indices"], expected) and np.array_equal(z["labels"], np.arange(64) % 2)
    out = tmp_path / "decoded"
    assert main(["decode", str(run_dir), str(codes), "-o", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 64
    first = np.asarray(Image.open(pngs[0]))
    assert np.array_equal(first, run.decode(expected[:1])[0])


def test_clear_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path / "missing"), "--data", "builtin"]) == 1
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r"),
                 "--max-steps", "1"]) == 1  # fmt: skip
    assert main(["train", "--set", "train.nosuch=1", "--max-steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("vqkit: error:") == 3
    assert main(["frobnicate"]) == 2
    assert main([]) == 2 and main(["--help"]) == 0


def test_train_needs_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --data and without data.spec in the config, train names the choices instead of
    silently training on the built-in set."""
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"data": {"image_size": 16}}))
    for argv in (
        ["train", "-o", str(tmp_path / "r")],
        ["train", "--config", str(config), "-o", str(tmp_path / "r")],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "no training data" in err and "--data builtin" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    # data named by --set data.spec or in the config: past the check (here to a missing file)
    missing = str(tmp_path / "missing.npz")
    config.write_text(json.dumps({"data": {"spec": missing}}))
    for argv in (["train", "--set", f"data.spec={missing}"], ["train", "--config", str(config)]):
        assert main([*argv, "-o", str(tmp_path / "r"), "--max-steps", "1"]) == 1
        err = capsys.readouterr().err
        assert "no training data" not in err and "missing.npz" in err


def test_demo_recipe_names_its_data() -> None:
    from vqkit.cli.train import names_data

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo.json"
    assert names_data(recipe, []) and json.loads(recipe.read_text())["data"]["spec"] == "builtin"


def test_device_defaults_to_auto(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from vqkit.cli.common import device_arg

    assert device_arg("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    spec = json.loads((run_dir / "config.json").read_text())["config"]["data"]["spec"]
    out = tmp_path / "eval.json"
    assert main(["eval", str(run_dir), "--data", spec, "--json", str(out), "--max-images", "8"]) == 0
    if not torch.cuda.is_available():  # a device this machine lacks: a usage error, not a traceback
        with pytest.raises(SystemExit) as exit_:
            main(["eval", str(run_dir), "--data", spec, "--device", "cuda"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "argument --device" in err and "CUDA" in err and "Traceback" not in err


def write_pngs(folder: Path, seed: int, n: int = 3) -> Path:
    from .conftest import smooth_images

    folder.mkdir(parents=True)
    for i, image in enumerate(smooth_images(n, seed=seed)):
        Image.fromarray(image).save(folder / f"{seed}_{i}.png")
    return folder


def second_run(root: Path) -> Path:
    """Another tiny run: another seed, so another model fingerprint."""
    from .conftest import smooth_images

    data = root / "other.npz"
    np.savez(data, images=smooth_images(32, seed=5))
    run = root / "other_run"
    argv = ["train", "--data", str(data), "-o", str(run), "--max-steps", "3", "--no-progress",
            "--set", "train.seed=1", "--set", "model.channels=16", "--set", "model.res_channels=8",
            "--set", "model.res_blocks=1", "--set", "model.quantizer.codebook_size=16",
            "--set", "model.quantizer.code_dim=8", "--set", "data.image_size=16",
            "--set", "train.batch_size=16"]  # fmt: skip
    assert main(argv) == 0
    return run


def pngs_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_decompress_finds_each_files_model(run_dir: Path, tmp_path: Path, vqkit_home: Path) -> None:
    """Files of two models in one call: each decoded by its own run, found from its fingerprint
    (the runs are in this test's registry because compress and train used them), exactly as --run
    decodes it."""
    other = second_run(tmp_path)
    files: list[Path] = []
    for run, seed, model in ((run_dir, 1, "static"), (other, 2, "raw"), (run_dir, 3, "raw")):
        out = tmp_path / f"vqk{seed}"
        argv = ["compress", str(run), str(write_pngs(tmp_path / f"png{seed}", seed)), "-o", str(out),
                "--entropy-model", model, "--no-progress"]  # fmt: skip
        assert main(argv) == 0
        files += sorted(out.glob("*.vqk"))
    assert main(["decompress", *map(str, files), "-o", str(tmp_path / "found"), "--no-progress"]) == 0
    found = pngs_of(tmp_path / "found")
    assert len(found) == 9
    for run, group in ((run_dir, files[:3] + files[6:]), (other, files[3:6])):
        given = tmp_path / f"given_{run.name}"
        argv = ["decompress", *map(str, group), "-o", str(given), "--run", str(run), "--no-progress"]
        assert main(argv) == 0
        for name, image in pngs_of(given).items():
            assert np.array_equal(found[name], image), name
    # the two models decode the same codes differently, so a file decoded by the wrong run would differ
    wrong = tmp_path / "wrong"
    assert main(["decompress", str(files[3]), "-o", str(wrong), "--run", str(run_dir), "--no-progress"]) == 1


def test_decompress_without_a_known_run_says_so(
    run_dir: Path, tmp_path: Path, vqkit_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from vqkit.codec import parse

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    out = tmp_path / "vqk"
    argv = ["compress", str(copy), str(write_pngs(tmp_path / "png", 7, 1)), "-o", str(out), "--no-progress"]
    assert main(argv) == 0
    (vqk,) = out.glob("*.vqk")
    fingerprint = parse(vqk.read_bytes()).fingerprint.hex()
    shutil.rmtree(copy)  # the registered folder is gone: a stale entry, skipped
    assert main(["decompress", str(vqk), "-o", str(tmp_path / "png_out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert fingerprint in err and "--run" in err and err.count("vqkit: error:") == 1
    assert "Traceback" not in err and not (tmp_path / "png_out").exists()
    # named with --run, the file decodes (run_dir holds the same model as the copy did)
    assert main(["decompress", str(vqk), "-o", str(tmp_path / "png_out"), "--run", str(run_dir)]) == 0
    # ... and once the run is known, --run is no longer needed
    assert main(["decompress", str(vqk), "-o", str(tmp_path / "again"), "--no-progress"]) == 0
    assert pngs_of(tmp_path / "again").keys() == pngs_of(tmp_path / "png_out").keys()


def test_prior_commands_write_their_figures(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    tiny = ["--set", "model.width=16", "--set", "model.layers=1", "--set", "model.heads=2",
            "--set", "train.batch_size=16", "--set", "train.holdout=0.2"]  # fmt: skip
    summary = tmp_path / "train.json"
    argv = ["prior", "train", str(copy), "--max-steps", "3", "--no-progress", "--json", str(summary),
            "--device", "cpu", "--precision", "fp32", *tiny]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(summary.read_text())
    saved = json.loads((copy / "prior_config.json").read_text())
    assert doc["step"] == 3 and doc["eval"] == read_result(copy / "prior_eval.json", "prior_eval").data
    assert saved["train"]["device"] == "cpu" and saved["train"]["precision"] == "fp32"
    assert doc["calibration"] == saved["calibration"]
    fit = tmp_path / "calibrate.json"
    assert main(["prior", "calibrate", str(copy), "--json", str(fit), "--device", "cpu"]) == 0
    record = json.loads(fit.read_text())
    assert record["bits_per_code_calibrated"] <= record["bits_per_code_raw"]
    # the same held-out grids as at the end of training: the same fit
    assert record["logit_scale"] == pytest.approx(doc["calibration"]["logit_scale"], rel=1e-6)
    # without the flags: --set train.precision is kept, the device is auto (not the prior config's cpu)
    argv = ["prior", "train", str(copy), "--overwrite", "--max-steps", "1", "--no-progress",
            "--set", "train.precision=fp32", *tiny]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((copy / "prior_config.json").read_text())
    assert saved["train"]["device"] == "auto" and saved["train"]["precision"] == "fp32"


def test_an_interrupted_training_exits_130_and_resumes(run_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import shutil

    import torch

    import vqkit.training.loop

    from .conftest import ctrl_c_at

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    ctrl_c_at(monkeypatch, vqkit.training.loop, 8)
    assert main(["train", "-o", str(copy), "--resume", "--max-steps", "12", "--no-progress"]) == 130
    monkeypatch.undo()
    assert torch.load(copy / "train_state.pt", weights_only=True)["step"] == 8  # stopped there, saved
    assert main(["train", "-o", str(copy), "--resume", "--max-steps", "12", "--no-progress"]) == 0
    assert torch.load(copy / "train_state.pt", weights_only=True)["step"] == 12
