"""Shipped models: trained run folders that come inside the package (``vqkit/zoo/models/NAME/``).

A shipped model is an ordinary run folder (config, weights, prior, static table, evaluations) plus
``card.json``: what the model is for, what it was trained on and under which licence, the exact
commands, the vqkit commit, the device and minutes, and its held-out figures. Every file of it has a
SHA-256 in the package's registry (``vqkit/zoo/registry.json``); loading a shipped model checks each
file against it first, so a damaged or altered copy is refused with the model's name and the
expected hash, not used to decode wrong pixels.

Every command that takes a run folder also takes a shipped model's name (a folder of that name in the
working directory wins, so a name never hides a user's run). Shipped folders are read-only to vqkit:
a writer's lock refuses them, and results a command would leave in the run folder go to the working
directory instead, named ``NAME-<file>`` (:func:`output_path`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqkit.runs.files import RunError
from vqkit.runs.layout import CARD_FILE

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
MODELS_DIR = ZOO_DIR / "models"  # one folder per shipped model
REGISTRY_PATH = ZOO_DIR / "registry.json"  # name -> {files: {file: sha256}, fingerprint}
REGISTRY_FORMAT = "vqkit-model-registry"
REGISTRY_FORMAT_VERSION = 1

_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 hex
_verified_lock = threading.Lock()


@dataclass(frozen=True)
class ShippedModel:
    name: str
    path: Path  # the model's run folder inside the package
    files: dict[str, str]  # file name -> SHA-256 (hex) of every file of the folder
    fingerprint: str  # the VQ-VAE's model fingerprint (vqkit.runs.fingerprint), 16 hex digits

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the files the registry lists (what the model costs an install)."""
        return sum((self.path / f).stat().st_size for f in self.files if (self.path / f).is_file())

    def card(self) -> dict[str, Any]:
        """The model card (card.json), as written by the zoo's packer."""
        path = self.path / CARD_FILE
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"shipped model {self.name}: cannot read its card {path}: {e}") from e
        if not isinstance(doc, dict):
            raise RunError(f"shipped model {self.name}: {path} is not a model card")
        return doc


def registry() -> dict[str, ShippedModel]:
    """Every shipped model by name (empty when none ship). RunError for a registry this vqkit cannot
    read: it comes with the package, so a broken one is a broken install."""
    try:
        doc = json.loads(REGISTRY_PATH.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(
            f"the shipped-model registry {REGISTRY_PATH} is unreadable ({e}); reinstall vqkit"
        ) from e
    if not isinstance(doc, dict) or doc.get("format") != REGISTRY_FORMAT:
        raise RunError(f"{REGISTRY_PATH} is not a vqkit model registry; reinstall vqkit")
    if doc.get("format_version") != REGISTRY_FORMAT_VERSION:
        raise RunError(f"{REGISTRY_PATH} has format version {doc.get('format_version')!r}, this vqkit reads "
                       f"{REGISTRY_FORMAT_VERSION}; reinstall vqkit")  # fmt: skip
    models: dict[str, ShippedModel] = {}
    for name, entry in (doc.get("models") or {}).items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise RunError(f"{REGISTRY_PATH}: model {name!r} has no file hashes; reinstall vqkit")
        models[name] = ShippedModel(name, MODELS_DIR / name, dict(files), str(entry.get("fingerprint", "")))
    return models


def get(name: str) -> ShippedModel:
    models = registry()
    if name not in models:
        known = ", ".join(sorted(models)) or "none"
        raise RunError(f"no shipped model named {name!r} (shipped: {known}; vqkit models lists them)")
    return models[name]


def resolve(ref: str | Path) -> Path:
    """The run folder a command's RUN argument names: the path itself when it exists, else the
    shipped model of that name, else the path unchanged (loading it then says it is missing)."""
    path = Path(ref)
    if path.exists() or len(path.parts) != 1:
        return path
    models = registry()
    return models[str(ref)].path if str(ref) in models else path


def shipped_name(run_dir: str | Path) -> str | None:
    """The model's name when ``run_dir`` is a shipped model's folder, else None."""
    try:
        path = Path(run_dir).resolve()
        if path.parent != MODELS_DIR.resolve():
            return None
    except OSError:
        return None
    return path.name if path.name in registry() else None


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file, remembered by path, size and mtime (a model is checked on every load)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _verified_lock:
        if key in _verified:
            return _verified[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _verified_lock:
        _verified[key] = digest
    return digest


def verify(name: str) -> ShippedModel:
    """Check every file of the shipped model against the registry's SHA-256; RunError naming the
    model, the file and the expected hash for a missing or different file."""
    model = get(name)
    for file, expected in sorted(model.files.items()):
        path = model.path / file
        if not path.is_file():
            raise RunError(f"shipped model {name}: {file} is missing from {model.path} (expected SHA-256 "
                           f"{expected}); reinstall vqkit")  # fmt: skip
        actual = file_sha256(path)
        if actual != expected:
            raise RunError(
                f"shipped model {name}: {path} does not match the registry (SHA-256 {actual}, expected "
                f"{expected}); the file is damaged or was changed: reinstall vqkit"
            )
    return model


def model_folders() -> list[Path]:
    """Every shipped model's folder, in name order: where a file's model is looked for after the
    runs this machine has seen."""
    return [m.path for _, m in sorted(registry().items())]


def output_path(run_dir: str | Path, name: str) -> Path:
    """Where a command leaves the file ``name`` that belongs in the run folder: the run folder, or
    for a read-only shipped model ``NAME-name`` in the working directory."""
    model = shipped_name(run_dir)
    return Path(run_dir) / name if model is None else Path.cwd() / f"{model}-{name}"


def refuse_writes(run_dir: str | Path, what: str) -> None:
    """RunError when ``run_dir`` is a shipped model: its folder is part of the install."""
    model = shipped_name(run_dir)
    if model is not None:
        raise RunError(
            f"{model} is a model shipped with vqkit and is read-only ({what} would write into it); "
            f"copy it into a run folder of your own first: vqkit models {model} --copy DIR"
        )
