"""The model fingerprint: which VQ-VAE a prior, a static table, a code cache or a .vqk file belongs to.

Two schemes, told apart by the weights file itself:

* ``content-v1`` (written from this version on; ``model.safetensors`` metadata ``fingerprint``
  names it): SHA-256 over the model config (canonical JSON) and, in sorted name order, each tensor's
  name, dtype, shape and bytes. Saving the same model again gives the same fingerprint, whatever
  order safetensors lays its header out in (it varies from process to process).
* legacy (weights files without that metadata entry, i.e. every run made before): SHA-256 of the
  file's bytes. Such a run keeps the fingerprint its prior, static table, code caches and .vqk files
  were stamped with for as long as its weights file is not rewritten; training rewrites it only
  when the weights change (then they belong to another model anyway).

``model_fingerprint`` is the first 8 bytes of the digest in hex; .vqk headers hash the whole digest.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from vqkit.runs.files import RunError
from vqkit.runs.layout import MODEL_FILE

SCHEME_KEY = "fingerprint"  # metadata entry of model.safetensors naming the scheme
CONTENT_SCHEME = "content-v1"
LEGACY_SCHEME = "file-sha256"  # no metadata entry: hash of the file's bytes

_cache: dict[tuple[str, int, int, int, int], bytes] = {}  # (path, dev, inode, size, mtime) -> digest
_cache_lock = threading.Lock()


def content_digest(state: Mapping[str, torch.Tensor], model_config: Mapping[str, Any]) -> bytes:
    """SHA-256 of a model's config and tensors, independent of any file layout. Each tensor adds a
    JSON line [name, dtype, shape, byte count] and then its bytes (little-endian, as stored), so no
    two different models hash the same stream."""
    h = hashlib.sha256()
    h.update(b"vqkit-model-content-v1\n")
    h.update(json.dumps(model_config, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        h.update(json.dumps([name, str(t.dtype), list(t.shape), len(data)]).encode() + b"\n")
        h.update(data)
    return h.digest()


def weights_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (header only; the tensors are not read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise RunError(f"cannot read {path}: {e}") from e


def file_content_digest(path: Path) -> bytes:
    """:func:`content_digest` of a weights file written by :func:`vqkit.runs.save_model`."""
    meta = weights_metadata(path)
    try:
        config = json.loads(meta["model_config"])
        state = load_file(str(path), device="cpu")
    except (KeyError, json.JSONDecodeError, SafetensorError, OSError) as e:
        raise RunError(f"cannot fingerprint {path}: {e}") from e
    return content_digest(state, config)


def scheme(run_dir: str | Path) -> str:
    """The fingerprint scheme of the run's weights: CONTENT_SCHEME or LEGACY_SCHEME (also for a file
    that is not safetensors: its bytes are all there is to identify it by; loading it fails later)."""
    path = _weights(run_dir)
    try:
        meta = weights_metadata(path)
    except RunError:
        return LEGACY_SCHEME
    return CONTENT_SCHEME if meta.get(SCHEME_KEY) == CONTENT_SCHEME else LEGACY_SCHEME


def model_digest(run_dir: str | Path) -> bytes:
    """The 32-byte digest that identifies the run's model (see the module's docstring for the two
    schemes). Cached while the weights file is unchanged."""
    path = _weights(run_dir)
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    if scheme(run_dir) == CONTENT_SCHEME:
        digest = file_content_digest(path)
    else:
        digest = hashlib.sha256(path.read_bytes()).digest()
    with _cache_lock:
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = digest
    return digest


def model_fingerprint(run_dir: str | Path) -> str:
    """The first 8 bytes of :func:`model_digest` in hex (16 characters): what priors, static tables
    and code caches record."""
    return model_digest(run_dir)[:8].hex()


def matches(run_dir: str | Path, fingerprint: str) -> bool:
    """Whether ``fingerprint`` (16 hex digits) names the run's current model."""
    return fingerprint == model_fingerprint(run_dir)


def _weights(run_dir: str | Path) -> Path:
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no trained weights ({MODEL_FILE} is missing)")
    return path
