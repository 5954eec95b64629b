"""One writer at a time in a run folder.

Every stage that writes into a run folder (training, prior training, calibration, carrying entropy
models, the report) holds :func:`run_lock` while it writes; readers never take it. The lock is an
exclusive ``flock`` on ``run.lock`` in the folder, which also records who holds it (PID, host, what,
since when) for the message a second writer gets. The kernel drops a flock when its process dies,
so a lock file left by a killed writer (``kill -9``, a node that went down) is stale: the next writer
takes it over and says so. On a file system without flock, a lock whose holder process is gone on
this host counts as stale.

Within one thread the lock is reentrant (the pipeline holds it around training, which takes it too);
another thread or process is refused.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vqkit.runs.files import RunError, file_mode, finish_commit
from vqkit.runs.layout import LOCK_FILE
from vqkit.runs.shipped import refuse_writes

_held = threading.local()  # .counts: {resolved run folder: depth} of the locks this thread holds


@contextmanager
def run_lock(run_dir: str | Path, what: str) -> Iterator[None]:
    """Hold the run folder's writer lock (creating the folder) for the ``with`` block. ``what`` names
    the writer in the message another one gets, e.g. "training". RunError when another process or
    thread holds it. Taking the lock also finishes a checkpoint commit that a crash interrupted."""
    run_dir = Path(run_dir)
    refuse_writes(run_dir, what)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = str(run_dir.resolve())
    counts: dict[str, int] = _held.__dict__.setdefault("counts", {})
    if counts.get(key):
        counts[key] += 1
        try:
            yield
        finally:
            counts[key] -= 1
        return
    path = run_dir / LOCK_FILE
    fd = _acquire(path, run_dir, what)
    counts[key] = 1
    try:
        finish_commit(run_dir)
        yield
    finally:
        del counts[key]
        # Remove the file while still holding the lock; a writer that opened it meanwhile sees that
        # its file is no longer the folder's lock file and opens the new one (_acquire).
        path.unlink(missing_ok=True)
        os.close(fd)


def holder_info(what: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "what": what,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def describe(info: dict[str, Any]) -> str:
    return (
        f"{info.get('what', 'a writer')} (PID {info.get('pid', '?')} on {info.get('host', '?')}, "
        f"since {info.get('since', '?')})"
    )


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _alive_here(info: dict[str, Any]) -> bool:
    """Whether the holder named by ``info`` may still run: true unless it ran on this host and its
    process is gone (another host's process cannot be checked)."""
    if info.get("host") != socket.gethostname():
        return bool(info)
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True  # exists under another user, or unreadable: do not take it over
    return True


def _acquire(path: Path, run_dir: Path, what: str) -> int:
    for _ in range(100):  # each retry means another writer just released the lock and removed its file
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flock = True
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunError(
                f"{run_dir} is in use: {describe(holder)} is writing to it. Wait for it to finish "
                "or stop it; reading the run does not need to wait"
            ) from None
        except OSError as e:  # a file system without flock: fall back to the recorded holder
            if e.errno not in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            flock = False
        try:
            current = os.stat(path)
            same = (current.st_dev, current.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        stale = _read(fd)
        if stale and not flock and _alive_here(stale):
            os.close(fd)
            raise RunError(
                f"{run_dir} is in use: {describe(stale)} is writing to it (if it is not, remove {path})"
            )
        if stale:
            print(
                f"vqkit: warning: {run_dir}: taking over the lock of {describe(stale)}, which ended "
                "without releasing it",
                file=sys.stderr,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_info(what)) + "\n").encode(), 0)
        return fd
    raise RunError(f"could not take the lock {path}: it keeps being replaced")  # pragma: no cover
