"""The HTML report: self-contained, drawn from the run folder, renders in a real browser."""

from __future__ import annotations

import base64
import html
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
from vqkit.runs import layout
from vqkit.runs.results import read_result, result_doc, write_result
from vqkit.visual import save_png

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
    """A tiny run with every kind of result a report can show, each written by its vqkit command."""
    root = tmp_path_factory.mktemp("report")
    data = root / "data.npz"
    np.savez(data, images=smooth_images(48), labels=np.arange(48) % 2)
    run_dir = root / "run"
    train(tiny_run_config(str(data)), run_dir, progress=False)
    assert read_result(run_dir / layout.EVAL_FILE, "eval").data["data"] == "holdout"  # training's own
    eval_json = run_dir / f"{layout.EVAL_PREFIX}first8.json"
    assert (
        main(["eval", str(run_dir), "--data", str(data), "--max-images", "8", "--json", str(eval_json)]) == 0
    )
    # What `vqkit sample RUN` leaves in the run folder by default (a picture; no prior needed here).
    save_png(np.zeros((16, 16, 3), np.uint8), run_dir / layout.SAMPLES_FILE)
    write_result(run_dir, layout.PRIOR_EVAL_FILE, "prior_eval", {"nll_bits_per_code": 3.2, "num_grids": 10})
    assert main(["codebook", str(run_dir), "-o", str(root / "cb.png"), "--data", str(data)]) == 0
    assert main(["probe", str(run_dir), "--train", str(data), "--test", str(data), "--pixel-size", "4"]) == 0
    assert main(["anomaly", str(run_dir), "--data", str(data), "--anomaly-class", "1"]) == 0
    assert main(["denoise", str(run_dir), "--eval", str(data), "--sigma", "25", "--max-images", "4"]) == 0
    assert main(["rd", str(run_dir), "--data", str(data), "--max-images", "6", "--scales", "1,1.5",
                 "--no-progress"]) == 0  # fmt: skip
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
        "Prior",
        "Rate-distortion",
        "Denoising",
        "Linear probe and k-NN",
        "Anomaly detection",
    ):
        assert f"<h2>{title}</h2>" in text, title
    assert "Not in this run folder" not in text and 'class="note"' not in text
    probe = read_result(full_run / layout.PROBE_FILE, "probe").data
    assert f"{probe['results']['codes']['linear']:.4g}" in text
    assert json.loads((full_run / "config.json").read_text())["config"]["data"]["spec"] in text
    assert "<h3>eval.json</h3>" in text and "<h3>eval_first8.json</h3>" in text
    assert f"{layout.SAMPLES_FILE}: samples from the prior" in text
    rd = read_result(full_run / layout.RD_FILE, "rd").data
    assert len(rd["points"]) == 4  # raw and static, at two scales
    for point in rd["points"]:
        assert f"<td>{point['bpp_actual']:.4g}</td>" in text and f"<td>{point['psnr']:.4g}</td>" in text
    denoise = read_result(full_run / layout.DENOISE_FILE, "denoise").data["results"][0]
    assert f"{denoise['denoised']['psnr']:.2f} / {denoise['denoised']['ssim']:.3f}" in text


def test_report_of_a_bare_run_notes_what_is_missing(full_run: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(full_run / "config.json", bare / "config.json")
    (bare / "probe.json").write_text("{not json")
    (bare / "metrics.jsonl").write_text('{"type": "train", "loss": 0.1}\n')  # no "step": a foreign layout
    assert main(["report", str(bare)]) == 0
    text = (bare / "report.html").read_text()
    assert "Not in this run folder" in text and "vqkit codebook RUN" in text and "vqkit rd RUN" in text
    assert "probe.json is not valid JSON" in text and "<img" not in text
    assert "Training curves: a result file has an unexpected layout" in text
    assert main(["report", str(tmp_path / "nothing"), "-o", str(tmp_path / "r.html")]) == 1


def test_report_refuses_results_of_another_version_kind_or_format(full_run: Path, tmp_path: Path) -> None:
    """Each refused file is a visible note and its section is left out; nothing is guessed."""
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    newer = {**result_doc("rd", read_result(run / layout.RD_FILE, "rd").data), "format_version": 2}
    (run / layout.RD_FILE).write_text(json.dumps(newer))
    write_result(run, layout.PROBE_FILE, "anomaly", {"auroc": {}})  # a result, but of another kind
    (run / layout.ANOMALY_FILE).write_text(json.dumps({"auroc": {"reconstruction_mse": 0.9}}))  # no format
    (run / f"{layout.EVAL_PREFIX}old.json").write_text(json.dumps({"psnr": 99.0}))
    assert main(["report", str(run)]) == 0
    text = html.unescape((run / layout.REPORT_FILE).read_text())
    assert "rd.json was written by a newer vqkit (result format 2); upgrade; left out" in text
    assert "probe.json holds a 'anomaly' result, not 'probe'; left out" in text
    assert "anomaly.json is not a vqkit result; left out" in text
    assert "eval_old.json is not a vqkit result; left out" in text and "99.0" not in text
    missing = text.split("Not in this run folder, so left out: ")[1].split("</p>")[0]
    for title in ("Rate-distortion", "Linear probe and k-NN", "Anomaly detection"):
        assert title in missing and f"<h2>{title}</h2>" not in text
    assert "<h2>Evaluation</h2>" in text  # the good evaluations stay


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


def test_training_curves_of_a_negative_loss_draw_without_warnings() -> None:
    """An entropy term (lfq, bsq) can make the loss negative: the loss axis is then linear, not a
    log axis with nothing to show."""
    import warnings

    from vqkit.reports.plots import training_curves_png

    records = [{"type": "train", "step": i, "loss": 0.02 * i - 0.05, "psnr": 10.0 + i, "usage": 1.0}
               for i in range(5)]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = training_curves_png(records)
    assert png is not None and png.startswith(b"\x89PNG")
