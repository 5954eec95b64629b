"""vqkit rd: the run's own codec measured on a data set, consistent with the files vqkit compress writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from vqkit.cli import main
from vqkit.pipeline import train
from vqkit.runs.results import read_result

from .conftest import smooth_images, tiny_run_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rd")
    np.savez(root / "data.npz", images=smooth_images(48))
    train(tiny_run_config(str(root / "data.npz")), root / "run", progress=False)  # fits the static table
    return root / "run"


def test_rd_points_are_the_files_compress_writes(run_dir: Path, tmp_path: Path) -> None:
    data = str(run_dir.parent / "data.npz")
    argv = ["rd", str(run_dir), "--data", data, "--max-images", "5", "--scales", "1,1.5", "--no-progress"]
    assert main([*argv, "--json", str(tmp_path / "rd.json")]) == 0
    doc = read_result(run_dir / "rd.json", "rd").data
    assert read_result(tmp_path / "rd.json", "rd").data == doc
    assert doc["entropy_models"] == ["raw", "static"]  # the run has a static table, no prior
    points = {(p["entropy_model"], p["scale"]): p for p in doc["points"]}
    assert set(points) == {("raw", 1.0), ("static", 1.0), ("raw", 1.5), ("static", 1.5)}
    pixels = 5 * 16 * 16
    for (_, scale), p in points.items():
        assert p["pixels"] == pixels and p["images"] == 5
        assert p["bpp_actual"] == pytest.approx(8 * p["bytes_total"] / pixels, rel=1e-12)
        side = math.ceil(round(16 * scale) / 4)  # coded size 16 or 24 px, f = 4: 4x4 or 6x6 codes
        assert p["bpp_nominal"] == pytest.approx(math.log2(16) * side * side / (16 * 16))
        assert p["bpp_actual"] > p["bpp_estimated"] > 0 and p["images_per_s"] > 0
    assert points[("raw", 1.0)]["bpp_estimated"] == pytest.approx(points[("raw", 1.0)]["bpp_nominal"])
    for model in ("raw", "static"):  # the codes, hence the quality, do not depend on the entropy model
        assert points[(model, 1.0)]["psnr"] == points[("static", 1.0)]["psnr"]
    # Parity with vqkit compress: the same images give files of exactly these sizes and this quality.
    out = tmp_path / "vqk"
    compress = [
        "compress",
        str(run_dir),
        data,
        "--max-images",
        "5",
        "-o",
        str(out),
        "--no-progress",
        "--entropy-model",
        "static",
        "--scale",
        "1.5",
        "--json",
        str(tmp_path / "c.json"),
    ]
    assert main(compress) == 0
    sizes = sum(f.stat().st_size for f in out.glob("*.vqk"))
    assert len(list(out.glob("*.vqk"))) == 5 and points[("static", 1.5)]["bytes_total"] == sizes
    assert points[("static", 1.5)]["bpp_actual"] == pytest.approx(8 * sizes / pixels, rel=1e-12)
    summary = json.loads((tmp_path / "c.json").read_text())["summary"]
    assert points[("static", 1.5)]["psnr"] == pytest.approx(summary["psnr"], abs=1e-9)
    assert points[("static", 1.5)]["ssim"] == pytest.approx(summary["ssim"], abs=1e-9)


def test_rd_clear_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(run_dir.parent / "data.npz")
    assert main(["rd", str(run_dir), "--data", data, "--entropy-models", "prior", "--no-progress"]) == 1
    assert "has no prior" in capsys.readouterr().err
    assert main(["rd", str(tmp_path / "missing"), "--data", data]) == 1
    assert "vqkit: error:" in capsys.readouterr().err
