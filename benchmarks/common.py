"""Shared by the benchmark scripts: where the data is, and the machine facts every result records."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
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
