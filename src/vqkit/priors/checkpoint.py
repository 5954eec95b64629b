"""Prior files in a run folder: self-describing, atomic, tied to the run's VQ-VAE by a fingerprint.

  prior.safetensors       weights; metadata: format, version, the PriorConfig, the model fingerprint
  prior_config.json       format, version, the PriorConfig, training config, data spec, fingerprint
  prior_train_state.pt    optimizer, step, RNG, elapsed; ``torch.load(weights_only=True)``
  prior_metrics.jsonl     one record per logging step / evaluation
  prior_eval.json         held-out evaluation at the end of training
  prior_integer.safetensors  a grouped prior's integer network (vqkit.priors.integer), exported at
                          the end of training; removed whenever the prior is saved without one, so
                          it never pairs with other weights

The fingerprint (vqkit.runs.fingerprint: 16 hex digits naming the run's VQ-VAE, by its tensors and
config, or for runs made before that scheme by its weights file's bytes) makes sure a prior is never
used with another VQ-VAE: its codes would mean something else.

The weights and prior_config.json commit as a set, and in training with the state too
(vqkit.runs.commit_files): a crash or a full disk leaves the previous set.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vqkit._version import __version__
from vqkit.config import ConfigError
from vqkit.priors.build import Prior, build_prior
from vqkit.priors.config import PriorConfig, prior_config_from_dict, prior_config_to_dict
from vqkit.priors.integer import IntegerPrior
from vqkit.runs import (
    RunError,
    commit_files,
    load_train_state,
    model_fingerprint,
    model_state,
    read_format_json,
    torch_writer,
    write_json,
)
from vqkit.runs.layout import (
    INTEGER_PRIOR_FILE,
    PRIOR_CONFIG_FILE,
    PRIOR_FILE,
    PRIOR_STATE_FILE,
)

PRIOR_FORMAT = "vqkit-prior"
PRIOR_FORMAT_VERSION = 1


def prior_exists(run_dir: str | Path) -> bool:
    return (Path(run_dir) / PRIOR_FILE).is_file()


def save_prior(run_dir: str | Path, prior: Prior, *, info: dict[str, Any] | None = None,
               fingerprint: str | None = None, integer: IntegerPrior | None = None) -> None:  # fmt: skip
    """Write prior.safetensors and prior_config.json, and ``integer`` (prior_integer.safetensors) if
    given, as one set. ``info`` adds entries to the JSON (training config, data spec, class names);
    ``fingerprint`` defaults to the run's current VQ-VAE. Without ``integer``, an old integer file
    is removed first: it belongs to the weights being replaced."""
    run_dir = Path(run_dir)
    fp = fingerprint or model_fingerprint(run_dir)
    writes = _prior_writes(prior, info, fp)
    if integer is None:
        (run_dir / INTEGER_PRIOR_FILE).unlink(missing_ok=True)
    else:
        writes[INTEGER_PRIOR_FILE] = integer.write_file
    commit_files(run_dir, writes, {"step": (info or {}).get("step")})


def save_prior_checkpoint(
    run_dir: Path, prior: Prior, state: dict[str, Any], *, info: dict[str, Any], fingerprint: str
) -> None:
    """Weights, prior_config.json (its ``step`` from ``state``) and the training state, as one set;
    an integer network of earlier weights is removed first."""
    (Path(run_dir) / INTEGER_PRIOR_FILE).unlink(missing_ok=True)
    writes = _prior_writes(prior, {**info, "step": state["step"]}, fingerprint)
    writes[PRIOR_STATE_FILE] = torch_writer(state)
    commit_files(Path(run_dir), writes, {"step": state["step"]})


def _prior_writes(prior: Prior, info: dict[str, Any] | None, fingerprint: str) -> dict[str, Any]:
    config = prior_config_to_dict(prior.config)
    metadata = {
        "format": PRIOR_FORMAT,
        "format_version": str(PRIOR_FORMAT_VERSION),
        "prior_config": json.dumps(config),
        "model_fingerprint": fingerprint,
    }
    state = model_state(prior)
    if prior.config.storage == "float16":  # scalars (the calibrated logit scale) keep float32
        state = {k: v.half() if v.is_floating_point() and v.numel() > 1 else v for k, v in state.items()}
    doc = _prior_doc(prior.config, info, fingerprint)
    return {
        PRIOR_FILE: lambda p: save_file(state, str(p), metadata=metadata),
        PRIOR_CONFIG_FILE: lambda p: p.write_text(json.dumps(doc, indent=2) + "\n"),
    }


def _prior_doc(config: PriorConfig, info: dict[str, Any] | None, fingerprint: str) -> dict[str, Any]:
    return {
        "format": PRIOR_FORMAT,
        "format_version": PRIOR_FORMAT_VERSION,
        "vqkit_version": __version__,
        "saved": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "model_fingerprint": fingerprint,
        **(info or {}),
        "prior": prior_config_to_dict(config),
    }


def write_prior_doc(
    run_dir: Path, config: PriorConfig, *, info: dict[str, Any] | None, fingerprint: str
) -> None:
    """prior_config.json alone: written before step 0 too, so even a crashed training says what it was."""
    write_json(Path(run_dir) / PRIOR_CONFIG_FILE, _prior_doc(config, info, fingerprint))


def read_prior_doc(run_dir: str | Path) -> dict[str, Any]:
    """prior_config.json (training config, data spec, class names); RunError when absent or broken."""
    path = Path(run_dir) / PRIOR_CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no prior ({PRIOR_CONFIG_FILE} is missing); run `vqkit prior train`")
    return read_format_json(path, PRIOR_FORMAT, PRIOR_FORMAT_VERSION, "prior config")


def load_prior(run_dir: str | Path, device: str | torch.device = "cpu") -> Prior:
    """Rebuild the prior from prior.safetensors alone, in eval mode. Raises RunError when it is
    missing or damaged, written by a newer vqkit, or trained on another VQ-VAE than the run's."""
    run_dir = Path(run_dir)
    path = run_dir / PRIOR_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no prior ({PRIOR_FILE} is missing); run `vqkit prior train`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise RunError(f"cannot read {path}: {e}") from e
    if meta.get("format") != PRIOR_FORMAT:
        raise RunError(f"{path} is not a vqkit prior (format={meta.get('format')!r})")
    try:
        version = int(meta.get("format_version", "-1"))
    except ValueError as e:
        raise RunError(f"{path}: bad format_version {meta.get('format_version')!r}") from e
    if version > PRIOR_FORMAT_VERSION:
        raise RunError(f"{path} was written by a newer vqkit (prior format {version}); upgrade")
    expected = model_fingerprint(run_dir)
    if meta.get("model_fingerprint") != expected:
        raise RunError(
            f"{path} was trained on another VQ-VAE (fingerprint {meta.get('model_fingerprint')}, the "
            f"run's model is {expected}); retrain it with `vqkit prior train {run_dir}`"
        )
    try:
        config = prior_config_from_dict(json.loads(meta["prior_config"]))
    except (KeyError, json.JSONDecodeError, ConfigError) as e:
        raise RunError(f"{path}: bad prior config in its metadata: {e}") from e
    prior = build_prior(config)
    state.setdefault("logit_scale", torch.ones(()))  # priors saved before calibration existed: unscaled
    try:
        prior.load_state_dict(state)
    except RuntimeError as e:
        raise RunError(f"{path} does not match its config: {str(e)[:500]}") from e
    return prior.to(device).eval()


def load_prior_state(run_dir: Path) -> dict[str, Any]:
    return load_train_state(run_dir, PRIOR_STATE_FILE)
