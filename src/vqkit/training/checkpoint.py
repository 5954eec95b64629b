"""Run folders: self-describing, atomic checkpoints (safetensors + JSON, no pickle for weights).

A run folder holds
  config.json        format name/version, package version, the resolved RunConfig, bookkeeping
  model.safetensors  weights and buffers (codebook, EMA statistics); the config rides in its metadata
  train_state.pt     optimizer, step, RNG states, elapsed time; tensors and plain containers only,
                     loaded with ``torch.load(weights_only=True)``
  metrics.jsonl      one JSON record per logging step / evaluation
Every file is written to a temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vqkit import __version__
from vqkit.config import ConfigError, RunConfig, from_dict, to_dict
from vqkit.models import VQVAE

RUN_FORMAT = "vqkit-run"
RUN_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"


class RunError(ValueError):
    """A run folder is missing, incomplete or from an incompatible version."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``. The file
    gets the permissions a plain open() would give it (0666 less the umask), not mkstemp's private 0600:
    runs and .vqk files are meant to be shared."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)  # reading the umask means setting it; put it straight back
    os.fchmod(fd, 0o666 & ~umask)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text)

    atomic_write(path, write)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def _git_info() -> dict[str, Any]:
    """Commit and dirty flag of the source tree vqkit runs from, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {}


def save_config(run_dir: Path, cfg: RunConfig, meta: dict[str, Any] | None = None) -> None:
    """Write config.json (before step 0, so even a crashed run says what it was)."""
    doc = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "vqkit_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        **_git_info(),
        "meta": meta or {},
        "config": to_dict(cfg),
    }
    write_json(run_dir / CONFIG_FILE, doc)


def read_format_json(path: Path, fmt: str, max_version: int, what: str) -> dict[str, Any]:
    """A self-describing JSON file of vqkit's: parsed, its ``format`` name and ``format_version``
    checked. RunError for broken JSON, another format (``what`` names the expected one) or a newer
    version."""
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise RunError(f"{path} is not a vqkit {what}")
    if int(doc.get("format_version", -1)) > max_version:
        version = doc["format_version"]
        raise RunError(f"{path} was written by a newer vqkit ({what} format {version}); upgrade")
    return doc


def read_config_doc(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise RunError(f"run folder not found: {run_dir}")
    if not path.is_file():
        raise RunError(f"{run_dir} is not a vqkit run: {CONFIG_FILE} is missing")
    return read_format_json(path, RUN_FORMAT, RUN_FORMAT_VERSION, "run config")


def load_run_config(run_dir: Path) -> RunConfig:
    doc = read_config_doc(run_dir)
    try:
        return from_dict(RunConfig, doc["config"])
    except (ConfigError, KeyError) as e:
        raise RunError(f"{run_dir}/{CONFIG_FILE}: {e}") from e


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of parameters and buffers (safetensors refuses shared storage)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_model(run_dir: Path, model: VQVAE) -> None:
    state = model_state(model)
    metadata = {
        "format": RUN_FORMAT,
        "format_version": str(RUN_FORMAT_VERSION),
        "model_config": json.dumps(to_dict(model.config)),
    }
    atomic_write(run_dir / MODEL_FILE, lambda p: save_file(state, str(p), metadata=metadata))


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> VQVAE:
    """Rebuild the model from a run folder alone (config.json + model.safetensors), in eval mode."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    weights = run_dir / MODEL_FILE
    if not weights.is_file():
        raise RunError(f"{run_dir} has no trained weights yet ({MODEL_FILE} is missing)")
    model = VQVAE(cfg.model)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as e:
        raise RunError(f"cannot read {weights}: {e}") from e
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing/unexpected keys or shape mismatches
        raise RunError(f"{weights} does not match its config.json: {str(e)[:500]}") from e
    return model.to(device).eval()


def model_digest(run_dir: str | Path) -> bytes:
    """SHA-256 of the run's weights file: identifies the exact model that codes, priors and
    compressed files belong to."""
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no trained weights ({MODEL_FILE} is missing)")
    return hashlib.sha256(path.read_bytes()).digest()


def model_fingerprint(run_dir: str | Path) -> str:
    """The first 8 bytes of :func:`model_digest` in hex (16 characters)."""
    return model_digest(run_dir)[:8].hex()


def save_train_state(run_dir: Path, state: dict[str, Any], name: str = STATE_FILE) -> None:
    atomic_write(run_dir / name, lambda p: torch.save(state, p))


def load_train_state(run_dir: Path, name: str = STATE_FILE) -> dict[str, Any]:
    """A training-state file (tensors and plain containers only: ``weights_only=True``)."""
    path = run_dir / name
    if not path.is_file():
        raise RunError(f"cannot resume: {path} is missing")
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or foreign files
        raise RunError(f"cannot read {path}: {e}") from e
    return state
