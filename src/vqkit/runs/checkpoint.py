"""Checkpoints in a run folder: self-describing, atomic (safetensors + JSON, no pickle for weights).

  config.json        format name/version, package version, the resolved RunConfig, bookkeeping
  model.safetensors  weights and buffers (codebook, EMA statistics); the config rides in its metadata
  train_state.pt     optimizer, step, RNG states, elapsed time; tensors and plain containers only,
                     loaded with ``torch.load(weights_only=True)``
File names live in :mod:`vqkit.runs.layout`; every write goes through :mod:`vqkit.runs.files`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vqkit._version import __version__
from vqkit.config import ConfigError, RunConfig, from_dict, to_dict
from vqkit.models import VQVAE
from vqkit.runs.files import RunError, atomic_write, read_format_json, write_json
from vqkit.runs.layout import CONFIG_FILE, MODEL_FILE, STATE_FILE

RUN_FORMAT = "vqkit-run"
RUN_FORMAT_VERSION = 1


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
