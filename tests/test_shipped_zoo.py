"""The models that really ship with this checkout: every file matches the registry, the cards are
complete and quote results files that exist, docs/models.md is current, each model has its rebuild
script, and the grey-digit model works end to end from its name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqkit.cli import main
from vqkit.runs import model_fingerprint, shipped
from vqkit.zoo import cards, pack

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_models_verify_and_have_complete_cards() -> None:
    models = shipped.registry()
    assert "mnist" in models
    for name, model in models.items():
        shipped.verify(name)
        card = cards.checked_card(model)
        assert model.fingerprint == model_fingerprint(model.path)
        for figure in card["figures"]:
            assert (ROOT / "benchmarks" / "results" / figure["results"]).is_file(), figure
        for f in model.files:
            assert (model.path / f).stat().st_size <= pack.MAX_FILE_BYTES
    assert sum(m.size_bytes for m in models.values()) <= pack.MAX_TOTAL_BYTES
    assert sorted(p.name for p in shipped.MODELS_DIR.iterdir()) == sorted(models)  # nothing unregistered


def test_models_md_is_current() -> None:
    zoo = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "zoo" / "zoo.py"), "docs", "--check"],
                         capture_output=True, text=True)  # fmt: skip
    assert zoo.returncode == 0, zoo.stderr


def test_every_shipped_model_has_a_rebuild_script() -> None:
    for name in shipped.registry():
        assert (ROOT / "benchmarks" / "zoo" / f"{name}.json").is_file()
        assert (ROOT / "benchmarks" / "zoo" / f"{name}.sh").is_file()


def test_mnist_samples_and_codes_a_digit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "mnist", "-n", "4", "--label", "3", "--seed", "0"]) == 0
    assert Image.open("mnist-samples.png").mode in ("L", "RGB")
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a "1"
    Image.fromarray(digit).save("one.png")
    assert main(["compress", "mnist", "one.png", "-o", "out/", "--no-progress"]) == 0
    assert main(["decompress", "out/one.vqk", "-o", "back/", "--no-progress"]) == 0
    back = np.asarray(Image.open("back/one.png").convert("L"), np.float64)
    assert 10 * np.log10(255**2 / np.mean((back - digit) ** 2)) > 20  # a stroke survives 0.5 bpp
