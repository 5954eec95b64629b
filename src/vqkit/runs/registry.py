"""The local run registry: model fingerprint -> run folder, so a file that names its model by
fingerprint (a .vqk file, a codes file) can find the run that decodes it.

One small JSON file, ``$VQKIT_HOME/runs.json`` (default ``$XDG_DATA_HOME/vqkit``, else
``~/.local/share/vqkit``), written atomically. It is a cache of what this machine has seen, never a
source of truth: every entry is checked against its folder when read (the folder must still exist and
its weights must still hash to the entry's fingerprint), and a stale entry is skipped. Training
registers a run when it finishes; the command line registers every run it loads. A registry that
cannot be read or written (a read-only home) costs only the look-up: registration never fails a
command.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from vqkit.runs import shipped
from vqkit.runs.files import RunError, write_json
from vqkit.runs.fingerprint import model_fingerprint
from vqkit.runs.home import home

REGISTRY_FORMAT = "vqkit-run-registry"
REGISTRY_FORMAT_VERSION = 1
REGISTRY_FILE = "runs.json"


def registry_path() -> Path:
    return home() / REGISTRY_FILE


def _read() -> tuple[dict[str, str], bool]:
    """(fingerprint -> folder, whether this vqkit may rewrite the file). A missing or broken file
    reads as empty and may be replaced; a newer format is left alone."""
    try:
        doc = json.loads(registry_path().read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}, True
    if not isinstance(doc, dict) or doc.get("format") != REGISTRY_FORMAT:
        return {}, True
    version = doc.get("format_version")
    if not isinstance(version, int) or version > REGISTRY_FORMAT_VERSION:
        return {}, False
    runs = doc.get("runs")
    if not isinstance(runs, dict):
        return {}, True
    return {k: v for k, v in runs.items() if isinstance(k, str) and isinstance(v, str)}, True


def _fingerprint_of(folder: Path) -> str | None:
    try:
        return model_fingerprint(folder)
    except (RunError, OSError):
        return None


def register(run_dir: str | Path) -> str | None:
    """Record that the run in ``run_dir`` has its current model fingerprint; return the fingerprint,
    or None when the run has no weights or the registry cannot be written. The newest registration of
    a fingerprint wins (a copied run folder points the fingerprint at the copy), and entries whose
    folders are gone are dropped on the way. A shipped model is not recorded: the package's registry
    already finds it, and its folder moves with each install."""
    folder = Path(run_dir).resolve()
    if (name := shipped.shipped_name(folder)) is not None:
        return shipped.get(name).fingerprint  # the package's registry holds it: nothing to hash or store
    fingerprint = _fingerprint_of(folder)
    if fingerprint is None:
        return None
    runs, writable = _read()
    if not writable:
        return fingerprint
    if runs.get(fingerprint) == str(folder) and list(runs)[-1] == fingerprint:
        return fingerprint  # already the newest entry: no write
    runs = {k: v for k, v in runs.items() if k != fingerprint and Path(v).is_dir()}
    runs[fingerprint] = str(folder)  # last = newest, so look-ups try recent runs first
    try:
        write_json(registry_path(), {"format": REGISTRY_FORMAT, "format_version": REGISTRY_FORMAT_VERSION,
                                     "runs": runs})  # fmt: skip
    except OSError:
        return None
    return fingerprint


def lookup(fingerprint: str) -> Path | None:
    """The registered run folder whose model has this fingerprint (16 hex characters), when it still
    exists and still holds that model; else None."""
    folder = _read()[0].get(fingerprint)
    if folder is None or _fingerprint_of(Path(folder)) != fingerprint:
        return None
    return Path(folder)


def registered_runs() -> Iterator[tuple[str, Path]]:
    """(fingerprint, folder) of every registered run that still holds its model, newest first. Lazy:
    each entry is checked (its weights hashed) only when reached, so a search can stop early."""
    for fingerprint, folder in reversed(list(_read()[0].items())):
        if _fingerprint_of(Path(folder)) == fingerprint:
            yield fingerprint, Path(folder)
