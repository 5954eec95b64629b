"""Atomic, self-describing files: every write in a run folder goes through here.

A write goes to a temporary name beside its target and is renamed over it (``os.replace`` is atomic
on POSIX and Windows), so a crash or a full disk never leaves half a file under the real name.

Several files that belong together (a checkpoint: weights, training state) commit as a set
(:func:`commit_files`): each is written to a staged name, then a manifest naming them is renamed
into place (the commit point), then the staged files are renamed over their targets and the
manifest is removed. A crash before the manifest leaves the previous set current; a crash after it
is finished by the next writer (:func:`finish_commit`, which the run folder's lock calls).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vqkit.runs.layout import COMMIT_FILE, STAGED_SUFFIX

COMMIT_FORMAT = "vqkit-commit"


class RunError(ValueError):
    """A run folder is missing, incomplete or from an incompatible version."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``. The file
    gets the permissions a plain open() would give it (0666 less the umask), not mkstemp's private 0600:
    runs and .vqk files are meant to be shared."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # After the write, not before: a writer may replace the file with one of its own
        # (safetensors' save_file does, and gave model.safetensors mode 0600).
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def file_mode() -> int:
    """0666 less the process's umask: what open() gives a new file."""
    umask = os.umask(0)
    os.umask(umask)  # reading the umask means setting it; put it straight back
    return 0o666 & ~umask


def _fsync(path: Path) -> None:
    """Flush a file (or, opened read-only, a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder; the rename order still holds
        pass
    finally:
        os.close(fd)


def staged_name(name: str) -> str:
    return f".{name}{STAGED_SUFFIX}"


def commit_files(run_dir: Path, writes: dict[str, Callable[[Path], None]], info: dict[str, Any]) -> None:
    """Write every ``name: write`` of ``writes`` into ``run_dir`` and make them current together.
    ``info`` (e.g. the step) goes into the manifest. On failure (a full disk) before the commit
    point, nothing changes and the exception propagates."""
    run_dir = Path(run_dir)
    finish_commit(run_dir)
    staged = {name: staged_name(name) for name in writes}
    manifest = run_dir / COMMIT_FILE
    try:
        for name, write in writes.items():
            atomic_write(run_dir / staged[name], write)
            _fsync(run_dir / staged[name])
        write_json(manifest, {"format": COMMIT_FORMAT, "format_version": 1, **info, "files": staged})
    except BaseException:
        if not manifest.exists():  # not committed: the previous set stays current
            for name in staged.values():
                (run_dir / name).unlink(missing_ok=True)
        raise
    _fsync(run_dir)
    finish_commit(run_dir)


def finish_commit(run_dir: Path) -> None:
    """Complete a commit that a crash interrupted after its commit point, and remove staged files of
    one interrupted before it. Idempotent; writers call it before they write (under the lock)."""
    run_dir = Path(run_dir)
    manifest = run_dir / COMMIT_FILE
    if manifest.is_file():
        doc = read_format_json(manifest, COMMIT_FORMAT, 1, "checkpoint commit")
        files = doc.get("files")
        if not isinstance(files, dict) or not all(
            isinstance(n, str) and Path(n).name == n and s == staged_name(n) for n, s in files.items()
        ):
            raise RunError(f"{manifest} is damaged; remove it and resume from the files as they are")
        for name, staged in files.items():
            if (run_dir / staged).exists():  # else it was renamed before the crash
                os.replace(run_dir / staged, run_dir / name)
        _fsync(run_dir)
        manifest.unlink()
    if run_dir.is_dir():
        # staged files of a commit that never reached its manifest, and their temporary files
        for leftover in run_dir.glob(f".*{STAGED_SUFFIX}*"):
            leftover.unlink(missing_ok=True)


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
