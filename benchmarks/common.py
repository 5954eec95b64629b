"""Shared by the benchmark scripts: where the data is, and the machine facts every result records."""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def write_result(doc: dict[str, Any], name: str, when: datetime, out: Path | None = None) -> Path:
    """Write a benchmark's JSON to ``out`` or benchmarks/results/NAME-YYYYmmdd-HHMM.json, say where, and
    return the path. numpy values are written as lists."""
    import numpy as np

    path = out or ROOT / "benchmarks" / "results" / f"{name}-{when:%Y%m%d-%H%M}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=lambda x: np.asarray(x).tolist()) + "\n")
    print(f"wrote {path}")
    return path


def prior_bench_args(doc: str | None, data: str, max_images: int) -> argparse.ArgumentParser:
    """The arguments every prior-coding benchmark takes: --run (with a prior), --data, --max-images, --out."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder with a prior")
    p.add_argument("--data", default=str(SHARED_DATA / data), help=f"images to code (default {data})")
    p.add_argument(
        "--max-images", type=int, default=max_images, help=f"the first N images (default {max_images})"
    )
    p.add_argument("--out", type=Path, help="the JSON's path (default benchmarks/results/NAME-DATE.json)")
    return p


def load_prior_bench(a: argparse.Namespace) -> tuple[Any, list[Any]]:
    """(Coding of --run on the CPU, the first --max-images images of --data); exits without a prior."""
    from vqkit.codec import Coding
    from vqkit.codec.files import read_inputs
    from vqkit.runs import Run

    images, _, _ = read_inputs([a.data], a.max_images, strict=True)
    coding = Coding(Run.load(a.run, "cpu"))
    if coding.prior() is None:
        raise SystemExit(f"{a.run} has no prior")
    return coding, images
