"""How long a new user waits: each shipped model's first commands, timed as fresh processes.

    python benchmarks/zoo/first_use.py --images mnist=DIR --images cifar10=DIR [--count 16]

For every shipped model (or those named with --models), in an empty scratch folder and with an empty
run registry (VQKIT_HOME), each command runs as its own `python -m vqkit` process, so the times include
interpreter start, imports, the SHA-256 check of the model's files and loading the weights:
  verify      vqkit models NAME --verify
  sample      vqkit sample NAME -n COUNT            (models with a prior)
  compress    vqkit compress NAME IMAGES -o out/    (COUNT images from --images NAME=DIR)
  decompress  vqkit decompress out/ -o back/        (the model found from the files alone)
  denoise     vqkit denoise NAME IMAGES -o clean/   (instead of the codec, for a model trained on
              corrupted images; the images' content does not change the time, so clean ones do)
Prints a table and writes benchmarks/results/zoo_first_use-<date>.json with the machine and command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, write_result
from vqkit.runs import load_run_config, shipped

SUFFIXES = {".png", ".webp", ".jpg", ".jpeg", ".bmp"}


def _images(folder: Path, count: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    if len(files) < count:
        raise SystemExit(f"first_use: {folder} holds {len(files)} images, fewer than --count {count}")
    step = len(files) // count  # spread over the classes' subfolders
    return files[::step][:count]


def _denoiser(model: Path) -> bool:
    """Whether the model was trained corrupted -> clean (data.corruption set, as vqkit denoise checks)."""
    return load_run_config(model).data.corruption is not None


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "vqkit", *argv], cwd=cwd, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"first_use: vqkit {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", action="append", default=[], metavar="NAME=DIR",
                   help="images to compress with model NAME (a folder, searched recursively)")  # fmt: skip
    p.add_argument("--models", help="comma-separated model names (default: every shipped model)")
    p.add_argument("--count", type=int, default=16, help="images to sample and to compress (default 16)")
    p.add_argument(
        "--out", type=Path, help="results JSON (default benchmarks/results/zoo_first_use-DATE.json)"
    )
    a = p.parse_args(argv)
    images = dict(item.split("=", 1) for item in a.images)
    names = a.models.split(",") if a.models else sorted(shipped.registry())
    rows = []
    for name in names:
        model = shipped.get(name)
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            env = {**os.environ, "VQKIT_HOME": str(work / "home")}
            row: dict[str, Any] = {"model": name, "size_bytes": model.size_bytes}
            row["verify_s"] = _timed(["models", name, "--verify"], work, env)
            if (model.path / "prior.safetensors").is_file():
                row["sample_s"] = _timed(["sample", name, "-n", str(a.count), "--seed", "0"], work, env)
            if name in images:
                (work / "inputs").mkdir()
                chosen = _images(Path(images[name]), a.count)
                inputs = [f"inputs/{i:03d}{f.suffix}" for i, f in enumerate(chosen)]
                for f, copy in zip(chosen, inputs, strict=True):
                    shutil.copyfile(f, work / copy)
                row["images"] = a.count
                if _denoiser(model.path):
                    row["denoise_s"] = _timed(["denoise", name, *inputs, "-o", "clean/"], work, env)
                else:
                    row["compress_s"] = _timed(
                        ["compress", name, "inputs", "-o", "out/", "--no-progress"], work, env
                    )
                    row["decompress_s"] = _timed(
                        ["decompress", "out/", "-o", "back/", "--no-progress"], work, env
                    )
        rows.append(row)
    print(f"| model | size MB | verify s | sample {a.count} s | compress {a.count} s | "
          f"decompress {a.count} s | denoise {a.count} s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        keys = ("verify_s", "sample_s", "compress_s", "decompress_s", "denoise_s")
        cells = [f"{r[k]:.1f}" if k in r else "-" for k in keys]
        print(f"| {r['model']} | {int(r['size_bytes']) / 2**20:.1f} | " + " | ".join(cells) + " |")
    when = datetime.now(UTC)
    doc = {"benchmark": "zoo_first_use", "date": when.isoformat(timespec="seconds"),
           "command": " ".join(["python", *sys.argv]), "machine": machine(), "count": a.count,
           "rows": rows}  # fmt: skip
    write_result(doc, "zoo_first_use", when, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
