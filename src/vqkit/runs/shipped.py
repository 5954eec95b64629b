"""Shipped models: trained run folders that come inside the package (``vqkit/zoo/models/NAME/``).

A shipped model is an ordinary run folder (config, weights, prior, static table, evaluations) plus
``card.json``: what the model is for, what it was trained on and under which licence, the exact
commands, the vqkit commit, the device and minutes, and its held-out figures. Every file of it has a
SHA-256 in the package's registry (``vqkit/zoo/registry.json``); loading a shipped model checks each
file against it first, so a damaged or altered copy is refused with the model's name and the
expected hash, not used to decode wrong pixels.

A model too large for the package can be *hosted*: its registry entry also gives a ``url`` (a base URL
ending in ``/``, a ``file://`` folder, or ``hf://OWNER/REPO@REVISION`` for the Hugging Face Hub when
``huggingface_hub`` is installed). ``vqkit models NAME --fetch`` downloads its files into
``$VQKIT_HOME/models/NAME`` and keeps each only when its SHA-256 matches the registry, so the hashes in
the package pin what the URL may serve; nothing is downloaded without that command. Once fetched, a
hosted model works like one that shipped.

Every command that takes a run folder also takes a shipped model's name (a folder of that name in the
working directory wins, so a name never hides a user's run). Shipped folders are read-only to vqkit:
a writer's lock refuses them, and results a command would leave in the run folder go to the working
directory instead, named ``NAME-<file>`` (:func:`output_path`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqkit.runs.files import RunError
from vqkit.runs.home import home
from vqkit.runs.layout import CARD_FILE

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
MODELS_DIR = ZOO_DIR / "models"  # one folder per shipped model
REGISTRY_PATH = ZOO_DIR / "registry.json"  # name -> {files: {file: sha256}, fingerprint[, url]}
HOSTED_DIR = "models"  # a hosted model's files go to $VQKIT_HOME/models/NAME
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
    url: str = ""  # where a hosted model's files are fetched from; "" when they ship in the package
    hosted_card: dict[str, Any] | None = None  # a hosted model's card, kept in the registry
    hosted_bytes: int = 0  # a hosted model's download size

    @property
    def hosted(self) -> bool:
        return bool(self.url)

    @property
    def fetched(self) -> bool:
        """Whether every file is on this machine (always, for a model that ships in the package)."""
        return all((self.path / f).is_file() for f in self.files)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the files the registry lists (what the model costs an install)."""
        return sum((self.path / f).stat().st_size for f in self.files if (self.path / f).is_file())

    def card(self) -> dict[str, Any]:
        """The model card (card.json), as written by the zoo's packer; a hosted model's comes from the
        registry, so it can be read before the files are fetched."""
        if self.hosted_card is not None:
            return self.hosted_card
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
        url, card, size = entry.get("url", ""), entry.get("card"), entry.get("size_bytes", 0)
        if not isinstance(url, str) or (url and not (isinstance(card, dict) and isinstance(size, int))):
            raise RunError(
                f"{REGISTRY_PATH}: hosted model {name!r} lacks its url, card or size; reinstall vqkit"
            )
        path = hosted_dir() / name if url else MODELS_DIR / name
        fingerprint = str(entry.get("fingerprint", ""))
        models[name] = ShippedModel(name, path, dict(files), fingerprint, url, card if url else None, size)
    return models


def hosted_dir() -> Path:
    """Where hosted models' files are kept on this machine: $VQKIT_HOME/models."""
    return home() / HOSTED_DIR


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
        if path.parent not in (MODELS_DIR.resolve(), hosted_dir().resolve()):
            return None
    except OSError:
        return None
    model = registry().get(path.name)
    return path.name if model is not None and model.path.resolve() == path else None


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
    if model.hosted and not model.fetched:
        raise RunError(f"{name} is hosted at {model.url} and not on this machine yet: "
                       f"vqkit models {name} --fetch downloads it (checked against its SHA-256)")  # fmt: skip
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
    """Every shipped model's folder on this machine (hosted ones once fetched), in name order: where
    a file's model is looked for after the runs this machine has seen."""
    return [m.path for _, m in sorted(registry().items()) if m.fetched]


def fetch(name: str, progress: Callable[[str], object] | None = None) -> ShippedModel:
    """Download a hosted model's missing files into its folder (hosted_dir()/NAME); each is written
    under a temporary name, hashed, and kept only when its SHA-256 is the registry's. Files already
    present and matching are not downloaded again. ``progress`` gets each file name before it is
    fetched. RunError for a model that ships in the package, an unreachable URL or a wrong hash."""
    model = get(name)
    if not model.hosted:
        raise RunError(f"{name} ships inside vqkit; there is nothing to fetch")
    model.path.mkdir(parents=True, exist_ok=True)
    for file, expected in sorted(model.files.items()):
        target = model.path / file
        if target.is_file() and file_sha256(target) == expected:
            continue
        if progress is not None:
            progress(file)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{file}.", dir=model.path)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _download(model.url, file, out)
            actual = file_sha256(tmp)
            if actual != expected:
                raise RunError(f"{name}: {file} from {model.url} has SHA-256 {actual}, the registry expects "
                               f"{expected}; it was not kept")  # fmt: skip
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
    return verify(name)


def _download(url: str, file: str, out: Any) -> None:
    """Copy ``file`` of the hosted folder ``url`` into the open binary file ``out``."""
    if url.startswith("hf://"):  # hf://OWNER/REPO@REVISION
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as e:
            raise RunError(f"{url} is on the Hugging Face Hub: pip install huggingface_hub") from e
        repo, _, revision = url.removeprefix("hf://").rstrip("/").partition("@")
        try:
            local = hf_hub_download(repo_id=repo, filename=file, revision=revision or None)
        except Exception as e:  # the hub's own errors (network, missing repo or file)
            raise RunError(f"cannot fetch {file} from {url}: {e}") from e
        with open(local, "rb") as f:
            shutil.copyfileobj(f, out)
        return
    base = url if url.endswith("/") else url + "/"
    try:
        with urllib.request.urlopen(base + urllib.request.pathname2url(file), timeout=60) as response:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as e:  # URLError, HTTPError and timeouts are OSErrors
        raise RunError(f"cannot fetch {file} from {base}: {e}") from e


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
