"""The HTML report: self-contained, drawn from the run folder, renders in a real browser."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqkit.cli import main
from vqkit.pipeline import train
from vqkit.runs import Run
from vqkit.tasks import artifacts
from vqkit.tasks.denoise import evaluate_denoising, save_examples

from .browser import check_page, find_chromium
from .conftest import smooth_images, tiny_run_config

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not found (Debian: apt-get install -y chromium chromium-driver; "
    "or set VQKIT_CHROMIUM to a Chromium/Chrome executable)",
)
EXPECTED_IMAGES = 8  # curves, reconstructions, 3 codebook pictures, samples, rate-distortion, denoising


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with every kind of result a report can show."""
    root = tmp_path_factory.mktemp("report")
    data = root / "data.npz"
    np.savez(data, images=smooth_images(48), labels=np.arange(48) % 2)
    run_dir = root / "run"
    train(tiny_run_config(str(data)), run_dir, progress=False)
    assert main(["codebook", str(run_dir), "-o", str(root / "cb.png"), "--data", str(data)]) == 0
    assert main(["probe", str(run_dir), "--train", str(data), "--test", str(data), "--pixel-size", "4"]) == 0
    assert main(["anomaly", str(run_dir), "--data", str(data), "--anomaly-class", "1"]) == 0
    run, clean = Run.load(run_dir), list(smooth_images(4, 16, seed=5))
    result = evaluate_denoising(run, clean, [25.0])
    artifacts.write_run_json(
        run_dir,
        artifacts.DENOISE_FILE,
        {**result, "results": [{"set": "tiny", **r} for r in result["results"]]},
    )
    save_examples(run, clean, 25.0, run_dir / artifacts.DENOISE_EXAMPLES)
    (run_dir / "prior_eval.json").write_text(json.dumps({"nll_bits_per_code": 3.2, "num_grids": 10}))
    shutil.copy(run_dir / "reconstructions.png", run_dir / "samples.png")
    points = [{"bpp_actual": 0.2, "psnr": 20.0}, {"bpp_actual": 0.4, "psnr": 23.5}]
    (run_dir / "rate_distortion.json").write_text(json.dumps({"points": points, "data": "tiny"}))
    return run_dir


@pytest.fixture(scope="module")
def report(full_run: Path) -> Path:
    out = full_run.parent / "report.html"
    assert main(["report", str(full_run), "-o", str(out)]) == 0
    return out


def test_report_is_self_contained(report: Path) -> None:
    text = report.read_text()
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower()
    sources = re.findall(r'\b(?:src|href)="([^"#]*)"', text)
    assert all(s.startswith("data:") for s in sources), [s[:40] for s in sources if not s.startswith("data:")]
    images = [s for s in sources if s.startswith("data:image/png;base64,")]
    assert len(images) == EXPECTED_IMAGES
    for uri in images:
        Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).verify()  # each is a real PNG


def test_report_shows_each_result(report: Path, full_run: Path) -> None:
    text = report.read_text()
    for title in (
        "Evaluation",
        "Training curves",
        "Reconstructions",
        "Codebook",
        "Samples and prior",
        "Rate-distortion",
        "Denoising",
        "Linear probe and k-NN",
        "Anomaly detection",
    ):
        assert f"<h2>{title}</h2>" in text, title
    assert "Not in this run folder" not in text
    probe = json.loads((full_run / "probe.json").read_text())
    assert f"{probe['results']['codes']['linear']:.4g}" in text
    assert json.loads((full_run / "config.json").read_text())["config"]["data"]["spec"] in text


def test_report_of_a_bare_run_notes_what_is_missing(full_run: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(full_run / "config.json", bare / "config.json")
    (bare / "probe.json").write_text("{not json")
    (bare / "metrics.jsonl").write_text('{"type": "train", "loss": 0.1}\n')  # no "step": a foreign layout
    assert main(["report", str(bare)]) == 0
    text = (bare / "report.html").read_text()
    assert "Not in this run folder" in text and "vqkit codebook RUN" in text
    assert "probe.json is not valid JSON" in text and "<img" not in text
    assert "Training curves: a result file has an unexpected layout" in text
    assert main(["report", str(tmp_path / "nothing"), "-o", str(tmp_path / "r.html")]) == 1


@needs_chromium
def test_report_renders_in_chromium(report: Path) -> None:
    page = check_page(report, screenshot=True)
    assert page.errors == []
    assert page.image_count == EXPECTED_IMAGES and page.images_loaded
    assert page.screenshot is not None
    shot = Image.open(io.BytesIO(page.screenshot))
    assert shot.size[0] >= 1000 and shot.size[1] > 2000  # the whole page, not just the first screen


@needs_chromium
def test_browser_check_sees_errors_and_broken_images(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="missing.png"><script>console.error("boom"); undefinedFunction();</script>'
        "</body></html>"
    )
    result = check_page(page)
    assert result.image_count == 1 and not result.images_loaded
    joined = "\n".join(result.errors)
    assert "boom" in joined and "undefinedFunction" in joined and "missing.png" in joined
