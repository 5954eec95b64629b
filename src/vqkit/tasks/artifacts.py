"""Names of the result files tasks leave in a run folder, which ``vqkit report`` reads.

Every task writes JSON first (and its pictures beside it); the report is drawn from these files
only, never by running a model (STYLE.md item 9).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqkit.runs import write_json

PROBE_FILE = "probe.json"  # vqkit probe: linear / k-NN accuracy per feature kind
CODEBOOK_FILE = "codebook.json"  # vqkit codebook: per-code counts, order, health, per-class counts
CODEBOOK_TILES = "codebook.png"  # every code's patch, most used first
CODEBOOK_USAGE = "codebook_usage.png"  # usage histogram
CODEBOOK_CLASSES = "codebook_classes.png"  # per-class code usage (labelled data only)
ANOMALY_FILE = "anomaly.json"  # vqkit anomaly: summary (AUROC per score, score means)
DENOISE_FILE = "denoise.json"  # denoising results (benchmarks/denoise.py or tasks.denoise)
DENOISE_EXAMPLES = "denoise_examples.png"  # clean / noisy / denoised rows


def write_run_json(run_dir: str | Path, name: str, data: Any) -> Path:
    """Write ``data`` as JSON into the run folder (atomically) and return the path."""
    path = Path(run_dir) / name
    write_json(path, data)
    return path
