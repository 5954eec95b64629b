"""benchmarks/README.md, the Kodak picture and README.md's generated blocks match the results files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "make_readme.py"


def check(root: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPT), "--check", "--root", str(root)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_generated_docs_are_current() -> None:
    result = check(ROOT)
    assert result.returncode == 0, result.stderr


def test_check_fails_when_a_result_changes(tmp_path: Path) -> None:
    # A copy of what the script reads, with one vqkit PSNR moved: every generated file is then stale.
    (tmp_path / "benchmarks").mkdir()
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    for name in ("README.md", "benchmarks/README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    assert check(tmp_path).returncode == 0
    path = tmp_path / "benchmarks" / "results" / "rate_distortion-kodak-h200-search2-20261128.json"
    doc = json.loads(path.read_text())
    point = next(p for p in doc["datasets"]["kodak"]["points"] if p["codec"] == "vqkit" and p["search"])
    point["psnr"] += 0.5
    path.write_text(json.dumps(doc))
    result = check(tmp_path)
    assert result.returncode == 1
    for stale in ("benchmarks/README.md", "README.md", "kodak-rd.png"):
        assert stale in result.stderr
