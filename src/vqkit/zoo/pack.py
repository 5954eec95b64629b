"""Put a trained run into the package as a shipped model: its files, its card and their SHA-256 in the
registry. Used by ``benchmarks/zoo/zoo.py pack`` (which also writes the card's figures and the docs)
and by the tests, with a registry of their own."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vqkit.runs import RunError, model_fingerprint, shipped
from vqkit.runs.layout import CARD_FILE, CONFIG_FILE, MODEL_FILE
from vqkit.zoo.cards import CARD_FORMAT, CARD_FORMAT_VERSION, CARD_KEYS

MAX_FILE_BYTES = 8 * 2**20  # a shipped file, at most (git keeps every version of a binary)
MAX_TOTAL_BYTES = 60 * 2**20  # every shipped model together


def install_model(
    work: Path,
    name: str,
    files: Sequence[str],
    card: dict[str, Any],
    *,
    url: str = "",
    upload: Path | None = None,
) -> shipped.ShippedModel:
    """Copy ``files`` of the run folder ``work`` into the package as model ``name``, replacing an
    older copy (a file in a subfolder of ``work`` lands at the top of the model's folder); write its
    card, and record every file's SHA-256 and the model fingerprint in the registry. RunError for a
    missing file, two files of one name, a file over MAX_FILE_BYTES, a card without every key, or
    when all models together would pass MAX_TOTAL_BYTES (then nothing is changed).

    With ``url``, the model is hosted instead: its files go to ``upload``/NAME, to be put at ``url``
    (see vqkit.runs.shipped), and the registry records the url, the card and the download size with
    the hashes; the size limits, which keep the repository small, do not apply."""
    if bool(url) != (upload is not None):
        raise ValueError("a hosted model needs both url and upload")
    missing = [k for k in CARD_KEYS if k not in card]
    if missing:
        raise RunError(f"the card of {name} lacks {', '.join(missing)}")
    shipping = sorted({CONFIG_FILE, MODEL_FILE, *files})
    if len({Path(f).name for f in shipping}) != len(shipping):
        raise RunError(f"two files to ship share a name: {sorted(files)}")
    for f in shipping:
        path = work / f
        if not path.is_file():
            raise RunError(f"{work} lacks {f}")
        if not url and path.stat().st_size > MAX_FILE_BYTES:
            raise RunError(
                f"{path} is {path.stat().st_size / 2**20:.1f} MB, over {MAX_FILE_BYTES // 2**20} MB"
            )
    others = sum(m.size_bytes for n, m in shipped.registry().items() if n != name and not m.hosted)
    size = sum((work / f).stat().st_size for f in shipping)
    if not url and others + size > MAX_TOTAL_BYTES:
        raise RunError(f"shipping {name} would take the models to {(others + size) / 2**20:.1f} MB, over "
                       f"{MAX_TOTAL_BYTES // 2**20} MB")  # fmt: skip
    target = (upload / name) if upload is not None else shipped.MODELS_DIR / name
    for old in {target, shipped.MODELS_DIR / name}:  # a model that moves out of the package leaves it
        if old.exists():
            shutil.rmtree(old)
    target.mkdir(parents=True)
    for f in shipping:
        shutil.copyfile(work / f, target / Path(f).name)
    doc = {"format": CARD_FORMAT, "format_version": CARD_FORMAT_VERSION, "name": name, **card}
    (target / CARD_FILE).write_text(json.dumps(doc, indent=1) + "\n")
    hashes = {f.name: shipped.file_sha256(f) for f in sorted(target.iterdir())}
    entry: dict[str, Any] = {"files": hashes, "fingerprint": model_fingerprint(target)}
    if url:
        entry |= {"url": url, "card": doc, "size_bytes": sum(f.stat().st_size for f in target.iterdir())}
    registry: dict[str, Any] = {"format": shipped.REGISTRY_FORMAT,
                                "format_version": shipped.REGISTRY_FORMAT_VERSION, "models": {}}  # fmt: skip
    if shipped.REGISTRY_PATH.is_file():
        registry = json.loads(shipped.REGISTRY_PATH.read_text())
    registry["models"][name] = entry
    registry["models"] = dict(sorted(registry["models"].items()))
    shipped.REGISTRY_PATH.parent.mkdir(parents=True, exist_ok=True)
    shipped.REGISTRY_PATH.write_text(json.dumps(registry, indent=1) + "\n")
    return shipped.get(name)
