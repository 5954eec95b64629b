"""vqkit's data folder on this machine: the run registry (vqkit.runs.registry) and hosted models'
files (vqkit.runs.shipped) live there. Its own module so that both can use it without importing each
other."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$VQKIT_HOME``, else ``$XDG_DATA_HOME/vqkit``, else ``~/.local/share/vqkit``."""
    if os.environ.get("VQKIT_HOME"):
        return Path(os.environ["VQKIT_HOME"]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "vqkit"
