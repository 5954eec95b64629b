"""benchmarks/rate_distortion.py's reference BD-rates against published learned-codec points on Kodak:
the vqkit curve is compared with each published curve as the anchor, the same way as with the classic
codecs, and the result lands in the JSON the shipped `photo` model's card reads."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rd() -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("rd_benchmark", ROOT / "benchmarks" / "rate_distortion.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _points(curve: list[tuple[float, float]]) -> list[dict[str, Any]]:
    return [{"codec": "vqkit", "run": "r", "variant": f"r@{i}", "bpp": b, "psnr": q} for i, (b, q) in
            enumerate(curve)]  # fmt: skip


def test_published_bd_rate_is_the_rate_ratio_at_equal_quality(rd: Any) -> None:
    curve = [(0.1, 26.0), (0.2, 28.0), (0.4, 30.0), (0.8, 32.0)]

    def codec(name: str, rate: float, shift: float) -> dict[str, Any]:
        points = [{"bpp": rate * b, "psnr": q + shift} for b, q in curve]
        return {"name": name, "label": name, "points": points}

    # the same curve; 25 % more bits at every PSNR; no PSNR range in common
    published = {"codecs": [codec("same", 1.0, 0.0), codec("dearer", 1.25, 0.0), codec("apart", 1.0, 20.0)]}
    out = rd.published_bd_rates(rd.bd_rates(_points(curve))["vqkit_curve"], published)
    assert set(out) == {"same", "dearer", "apart"}
    assert out["same"]["bd_rate"]["percent"] == pytest.approx(0.0, abs=1e-9)
    # vqkit needs 1/1.25 of the anchor's bits at every PSNR: -20 %, not +25 % (the anchor is published)
    assert out["dearer"]["bd_rate"]["percent"] == pytest.approx(-20.0, abs=1e-6)
    assert out["apart"]["bd_rate"] is None
    assert out["dearer"]["points"][0] == pytest.approx((0.125, 26.0))


def test_the_shipped_published_file_has_the_balle_curves(rd: Any) -> None:
    doc = json.loads(rd.PUBLISHED.read_text())
    names = {c["name"] for c in doc["codecs"]}
    assert {"bmshj2018-factorized", "bmshj2018-hyperprior"} <= names  # what the photo card quotes
    for c in doc["codecs"]:
        assert len(c["points"]) >= 4 and all(p["bpp"] > 0 for p in c["points"])
