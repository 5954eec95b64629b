"""Atomic, self-describing files: every write in a run folder goes through here.

A write goes to a temporary name beside its target and is renamed over it (``os.replace`` is atomic
on POSIX and Windows), so a crash or a full disk never leaves half a file under the real name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
