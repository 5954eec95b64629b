"""Checkpoints in a run folder: self-describing, atomic (safetensors + JSON, no pickle for weights).

  config.json        format name/version, package version, the resolved RunConfig, bookkeeping
  model.safetensors  weights and buffers (codebook, EMA statistics); the config rides in its metadata
  train_state.pt     optimizer, step, RNG states, elapsed time, metrics offset; tensors and plain
                     containers only, loaded with ``torch.load(weights_only=True)``
File names live in :mod:`vqkit.runs.layout`; every write goes through :mod:`vqkit.runs.files`.

A training checkpoint (weights + training state) commits as a set (:func:`save_checkpoint`); both
record their step, and :func:`load_checkpoint` refuses a pair whose steps differ. The weights
file is left as it is when the model in it is the one being saved (a resume that ran no new step),
so it keeps its fingerprint, however safetensors would lay the new file out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vqkit._version import __version__
from vqkit.config import ConfigError, RunConfig, from_dict, to_dict
from vqkit.models import VQVAE
from vqkit.runs.files import RunError, atomic_write, commit_files, read_format_json, write_json
from vqkit.runs.fingerprint import (
    CONTENT_SCHEME,
    SCHEME_KEY,
    content_digest,
    file_content_digest,
    weights_metadata,
)
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


def _model_writer(model: VQVAE, step: int | None) -> tuple[Any, bytes]:
    """(write(path), content digest) of the model's weights file."""
    state = model_state(model)
    config = to_dict(model.config)
    metadata = {
        "format": RUN_FORMAT,
        "format_version": str(RUN_FORMAT_VERSION),
        "model_config": json.dumps(config),
        SCHEME_KEY: CONTENT_SCHEME,
    }
    if step is not None:
        metadata["step"] = str(step)
    digest = content_digest(state, json.loads(metadata["model_config"]))
    return (lambda p: save_file(state, str(p), metadata=metadata)), digest


def _unchanged(run_dir: Path, digest: bytes, step: int | None) -> bool:
    """Whether the run's weights file already holds this model at this step (a legacy file without a
    step counts when its tensors and config are these)."""
    path = run_dir / MODEL_FILE
    if not path.is_file():
        return False
    try:
        saved_step = weights_metadata(path).get("step")
        if saved_step is not None and (step is None or saved_step != str(step)):
            return False
        return file_content_digest(path) == digest
    except RunError:  # damaged or foreign: overwrite it
        return False


def save_model(run_dir: Path, model: VQVAE, step: int | None = None) -> None:
    """Write model.safetensors (the config and ``step`` ride in its metadata), unless it already holds
    this very model."""
    run_dir = Path(run_dir)
    write, digest = _model_writer(model, step)
    if not _unchanged(run_dir, digest, step):
        atomic_write(run_dir / MODEL_FILE, write)


def save_checkpoint(run_dir: Path, model: VQVAE, state: dict[str, Any]) -> None:
    """Weights and training state (``state["step"]``), committed as a set: a crash or a full disk
    leaves the previous pair current (vqkit.runs.files.commit_files)."""
    run_dir = Path(run_dir)
    step = int(state["step"])
    write, digest = _model_writer(model, step)
    writes = {} if _unchanged(run_dir, digest, step) else {MODEL_FILE: write}
    writes[STATE_FILE] = torch_writer(state)
    commit_files(run_dir, writes, {"step": step})


def torch_writer(state: dict[str, Any]) -> Callable[[Path], None]:
    """A writer of ``state`` with torch.save for atomic_write / commit_files. torch reports a full
    disk as RuntimeError ("unexpected pos ..."); it is raised as the OSError it is."""

    def write(path: Path) -> None:
        try:
            torch.save(state, path)
        except RuntimeError as e:
            raise OSError(f"could not write {path.name}: {e}") from e

    return write


def load_checkpoint(run_dir: Path) -> tuple[VQVAE, dict[str, Any]]:
    """The model and training state to resume from, checked to be one checkpoint: RunError when the
    weights' step and the state's differ."""
    run_dir = Path(run_dir)
    state = load_train_state(run_dir)
    model = load_model(run_dir)
    saved = weights_metadata(run_dir / MODEL_FILE).get("step")  # absent in runs made before
    if saved is not None and int(saved) != int(state["step"]):
        raise RunError(
            f"cannot resume {run_dir}: its weights are of step {saved} but its training state is of "
            f"step {state['step']}, so they are not one checkpoint; start a new run"
        )
    return model, state


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
