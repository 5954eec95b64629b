"""The tools that build shipped models (benchmarks/zoo): specs are strict, `train` resumes and skips
what is done, `pack` turns the work folder into a card and a registry entry, and the photo selection
copies exactly its list, never a Kodak photo."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vqkit.cli import main
from vqkit.config import to_dict
from vqkit.runs import shipped

from .conftest import smooth_images, tiny_run_config

ZOO = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"zoo_{name}", ZOO / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


zoo = _module("zoo")
photos = _module("photos")


def test_every_spec_loads_and_unknown_keys_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for path in sorted(ZOO.glob("*.json")):
        spec = zoo.load_spec(path.stem)
        assert spec.steps and spec.figures and spec.hours_cpu2 > 0 and (ZOO / f"{path.stem}.sh").is_file()
        ids = {f.id for f in spec.figures}
        for text in (spec.rate, spec.quality, *spec.limits):  # templates over the figures
            text.format(**{i: "x" for i in ids})
    doc = json.loads((ZOO / "mnist.json").read_text())
    doc["steps"][0]["retries"] = 3
    (tmp_path / "mnist.json").write_text(json.dumps(doc))
    monkeypatch.setattr(zoo, "SPECS", tmp_path)
    with pytest.raises(SystemExit, match="retries"):
        zoo.load_spec("mnist")


@pytest.fixture
def tiny_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A spec whose steps train a tiny VQ-VAE and evaluate it, with a registry of the test's own."""
    data = tmp_path / "data.npz"
    np.savez(data, images=smooth_images(64))
    config = tmp_path / "tiny.json"
    cfg = to_dict(tiny_run_config(str(data), max_steps=6))
    del cfg["data"]["spec"]
    config.write_text(json.dumps(cfg))
    doc = {
        "name": "tiny", "task": "a test", "summary": "s", "licence": "Apache-2.0", "recipe": str(config),
        "grid": "4x4", "rate": "{usage} usage", "quality": "{psnr} PSNR", "hours_cpu2": 0.01,
        "hours_gpu": 0.01,
        "data": {"train": "blobs", "eval": "the same blobs", "licence": "none", "hint": "an .npz"},
        "steps": [
            {"name": "VQ-VAE", "argv": ["train", "--config", str(config), "--data", "{data}", "-o", "{work}",
                                        "--max-steps", "6", "--no-progress"],
             "resume": ["train", "-o", "{work}", "--resume", "--max-steps", "6", "--no-progress"],
             "state": "train_state.pt"},
            {"name": "evaluation", "argv": ["eval", "{work}", "--data", "{data}", "--json", "{work}/e.json"],
             "creates": "e.json"},
        ],
        "ship": ["config.json", "model.safetensors", "e.json"],
        "figures": [{"id": "psnr", "what": "PSNR", "file": "e.json", "key": "data.psnr",
                     "format": "{:.1f} dB"},
                    {"id": "usage", "what": "usage", "file": "e.json", "key": "data.codebook_usage",
                     "format": "{:.2f}"}],
        "limits": ["A test."],
    }  # fmt: skip
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tiny.json").write_text(json.dumps(doc))
    monkeypatch.setattr(zoo, "SPECS", specs)
    monkeypatch.setattr(zoo, "DOCS", tmp_path / "models.md")
    monkeypatch.setattr(shipped, "MODELS_DIR", tmp_path / "zoo" / "models")
    monkeypatch.setattr(shipped, "REGISTRY_PATH", tmp_path / "zoo" / "registry.json")
    results = tmp_path / "results"
    # The steps run in this process (the same vqkit main a `python -m vqkit` child would run), which
    # spares four interpreter starts; the command line is what the log and the card record.
    monkeypatch.setattr(zoo, "_call", _in_process)
    monkeypatch.setattr(zoo, "write_result", lambda doc, name, when: _write(results / f"{name}.json", doc))
    return zoo.load_spec("tiny"), str(data), tmp_path / "work"


def _in_process(command: list[str]) -> int:
    assert command[1:3] == ["-m", "vqkit"]
    return int(main(command[3:]))


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_train_resumes_and_skips_then_pack_writes_the_card(tiny_spec: Any) -> None:
    spec, data, work = tiny_spec
    assert zoo.train(spec, data, work) == 0
    log = zoo.read_log(work)
    assert [r["step"] for r in log] == ["VQ-VAE", "evaluation"] and all(r["rc"] == 0 for r in log)
    assert log[0]["argv"][:2] == ["train", "--config"] and str(work) in log[0]["argv"]
    stamp = (work / "e.json").stat().st_mtime_ns
    assert zoo.train(spec, data, work) == 0  # again: training resumes (nothing left), evaluation is skipped
    log = zoo.read_log(work)
    assert [r["argv"][:3] for r in log[2:]] == [["train", "-o", str(work)]]
    assert "--resume" in log[2]["argv"] and (work / "e.json").stat().st_mtime_ns == stamp
    # a re-evaluation (its output removed, the step run again) replaces the first on the card
    (work / "e.json").unlink()
    assert zoo.train(spec, data, work) == 0
    log = zoo.read_log(work)
    assert [r["step"] for r in log] == ["VQ-VAE", "evaluation", "VQ-VAE", "VQ-VAE", "evaluation"]
    log[1]["seconds"] = 99.0  # mark the first evaluation (both may share their date and seconds)
    (work / zoo.LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in log))
    current = zoo.current_log(spec, work)
    assert [r["step"] for r in current] == ["VQ-VAE", "evaluation", "VQ-VAE", "VQ-VAE"]
    assert current[1] == log[4] and current[1]["seconds"] != 99.0
    assert zoo.pack(spec, work) == 0
    model = shipped.verify("tiny")
    card = model.card()
    assert card["commands"][0].startswith("vqkit train --config") and len(card["commands"]) == 4
    assert card["commands"][1].startswith("vqkit eval")
    # the card names the data folder DATA, as its rebuild line does, never this machine's path
    assert "--data DATA " in card["commands"][0] and not any(data in c for c in card["commands"])
    assert set(card["minutes"]) == {"VQ-VAE", "evaluation"}
    psnr = json.loads((work / "e.json").read_text())["data"]["psnr"]
    assert card["quality"] == f"{psnr:.1f} dB PSNR" and card["limits"] == ["A test."]
    assert card["rebuild"].startswith("benchmarks/zoo/tiny.sh DATA")
    assert sorted(model.files) == ["card.json", "config.json", "e.json", "model.safetensors"]
    assert "## `tiny`: a test" in zoo.DOCS.read_text()
    assert zoo.docs(check=True) == 0


class _Killed(BaseException):
    """Stands for ``kill -9``: the build's process ends inside the step, with no chance to log it."""


def test_a_killed_step_is_logged_when_the_build_runs_again(
    tiny_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, data, work = tiny_spec

    def killed_after_a_checkpoint(command: list[str]) -> int:
        marker = json.loads((work / zoo.RUNNING_FILE).read_text())
        assert marker["step"] == "VQ-VAE" and "train" in marker["argv"]
        checkpoint = work / "ckpt"
        checkpoint.write_bytes(b"x")  # the last file the step wrote, 30 s after it started
        os.utime(checkpoint, (marker["started_unix"] + 30, marker["started_unix"] + 30))
        raise _Killed

    monkeypatch.setattr(zoo, "_call", killed_after_a_checkpoint)
    with pytest.raises(_Killed):
        zoo.train(spec, data, work)
    assert zoo.read_log(work) == []  # nothing logged: the process died inside the step

    monkeypatch.setattr(zoo, "_call", _in_process)
    assert zoo.train(spec, data, work) == 0
    log = zoo.read_log(work)
    assert [(r["step"], r["rc"]) for r in log] == [("VQ-VAE", 137), ("VQ-VAE", 0), ("evaluation", 0)]
    assert log[0]["seconds"] == 30.0 and log[0]["argv"] == log[1]["argv"]
    assert not (work / zoo.RUNNING_FILE).exists()
    assert zoo.current_log(spec, work)[0] == log[0]  # its minutes reach the card
    assert zoo.train(spec, data, work) == 0 and len(zoo.read_log(work)) == 4  # logged once only


def test_pack_refuses_an_unfinished_work_folder(tiny_spec: Any) -> None:
    spec, _, work = tiny_spec
    work.mkdir()
    with pytest.raises(SystemExit, match=r"lacks config\.json"):
        zoo.pack(spec, work)


def test_photo_selection_copies_its_list_and_never_kodak(tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    rng = np.random.default_rng(0)
    for source in photos.SOURCES:
        for name in (*source.train, *source.val):
            path = packages / source.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 60, 4), np.uint8), "RGBA").save(path, format="PNG")
    kodak = packages / "sporco" / "data" / "kodim23.png"
    Image.new("RGB", (8, 8)).save(kodak)
    entries = photos.select(packages, tmp_path / "out")
    expected = sum(len(s.train) + len(s.val) for s in photos.SOURCES)
    assert len(entries) == expected and len({e["file"] for e in entries}) == expected
    assert not any("kodim" in str(e["original"]) for e in entries)
    for e in entries:
        with Image.open(tmp_path / "out" / e["file"]) as im:
            assert im.mode == "RGB" and list(im.size) == e["size"]
            assert im.size == (60 // e["downscale"], 40 // e["downscale"])
    assert {e["split"] for e in entries if e["package"] == "sporco"} == {"val"}
    kodak.unlink()
    (packages / photos.SOURCES[2].root / "sail.png").unlink()
    with pytest.raises(SystemExit, match=r"sail\.png"):
        photos.select(packages, tmp_path / "again")


CHILD = """
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
stop = []
signal.signal(signal.SIGINT, lambda *_: stop.append(1))
(out / "ready").touch()
while not stop:
    time.sleep(0.01)
time.sleep(1.0)  # a training finishing its step and writing its checkpoint
(out / "saved").touch()
"""

DRIVER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("zoo", sys.argv[1])
zoo = sys.modules["zoo"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zoo)
sys.exit(zoo._call([sys.executable, sys.argv[2], sys.argv[3]]))
"""


def test_ctrl_c_lets_the_running_step_save_and_stops_the_build(tmp_path: Path) -> None:
    """Ctrl-C reaches the build and its step alike (one process group): the step must get the time
    to save its checkpoint, not be killed, and the build must stop there (130), not go on."""
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "driver.py").write_text(DRIVER)
    driver = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(ZOO / "zoo.py"), str(tmp_path / "child.py"),
         str(tmp_path)],
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (tmp_path / "ready").exists():
        assert driver.poll() is None and time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=60) == 130
    assert (tmp_path / "saved").exists()
