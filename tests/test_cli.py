"""Every subcommand through ``main(argv)``, as a user calls it, on a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqkit.cli import main
from vqkit.runs import Run


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
    argv = ["train", "--data", str(data), "--out", str(run), "--max-steps", "6", "--no-progress"]
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 0
    return run


def test_train_writes_run_and_refuses_overwrite(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (run_dir / "model.safetensors").is_file()
    data = json.loads((run_dir / "config.json").read_text())["config"]["data"]["spec"]
    assert main(["train", "--data", data, "--out", str(run_dir), "--max-steps", "1"]) == 1
    assert "already holds a trained run" in capsys.readouterr().err


def test_resume_continues(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--out", str(copy), "--resume", "--max-steps", "8", "--no-progress"]) == 0
    rows = [json.loads(ln) for ln in (copy / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 8


def test_eval_prints_table_and_writes_json(run_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    spec = json.loads((run_dir / "config.json").read_text())["config"]["data"]["spec"]
    out = tmp_path / "eval.json"
    assert main(["eval", str(run_dir), "--data", spec, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    keys = {"psnr", "ssim", "mse", "codebook_usage", "perplexity", "dead_codes", "bpp_nominal",
            "num_images"}  # fmt: skip
    assert keys <= set(result) and result["num_images"] == 64
    assert result["bpp_nominal"] == pytest.approx(4 * 16 / 256)  # log2(16) bits x 16 codes / 256 px
    assert "PSNR" in capsys.readouterr().out


def test_reconstruct_any_size(run_dir: Path, tmp_path: Path) -> None:
    img = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (21, 27, 3), np.uint8)).save(img)
    out = tmp_path / "grid.png"
    assert main(["reconstruct", str(run_dir), str(img), "-o", str(out), "--scale", "1"]) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] >= 2 * 21 and grid.shape[1] >= 27


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
