"""Versioned result documents: what a vqkit command computes about a run, as the report reads it.

Every command whose figures ``vqkit report`` shows writes them through :func:`write_result` (into the
run folder, under a name from :mod:`vqkit.runs.layout`) and, for ``--json PATH``, through
:func:`write_result_file`. The report reads them back with :func:`read_result` only, so a file from a
newer vqkit, of another kind or of no known format is refused with a clear message, never guessed at.

    {"format": "vqkit-result", "format_version": 1, "kind": "rd", "vqkit_version": "0.2.0",
     "created": "2026-12-06T03:00:00+00:00", "data": {...}}

``data`` per kind (the keys the report relies on; commands may add more):
  eval        vqkit eval / end of training: psnr, ssim, mse, codebook_usage, perplexity, dead_codes, ...
  prior_eval  the prior's held-out evaluation: nll_bits_per_code, ...
  probe       vqkit probe: results {features: {dims, linear, knn}}, chance, train, test, ...
  codebook    vqkit codebook: codebook_size, codebook_usage, dead_codes, perplexity, counts, order, ...
  anomaly     vqkit anomaly: score means, auroc per score (when classes were named), notes
  similar     vqkit similar: results [{rank, index, name, similarity}]
  denoise     vqkit denoise --eval: results [{sigma, noisy: {psnr, ssim}, denoised: {psnr, ssim}}]
  rd          vqkit rd: points [{entropy_model, scale, bpp_nominal, bpp_estimated, bpp_actual, psnr, ...}]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vqkit._version import __version__
from vqkit.runs.files import RunError, read_format_json, write_json
from vqkit.runs.shipped import output_path

RESULT_FORMAT = "vqkit-result"
RESULT_FORMAT_VERSION = 1
KINDS = ("eval", "prior_eval", "probe", "codebook", "anomaly", "similar", "denoise", "rd")


@dataclass(frozen=True)
class Result:
    kind: str
    data: dict[str, Any]
    vqkit_version: str  # the vqkit that wrote it
    created: str  # ISO 8601, UTC


def result_doc(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """The document :func:`write_result` writes (ValueError for an unknown kind: a programming error)."""
    if kind not in KINDS:
        raise ValueError(f"unknown result kind {kind!r}; one of {', '.join(KINDS)}")
    return {
        "format": RESULT_FORMAT,
        "format_version": RESULT_FORMAT_VERSION,
        "kind": kind,
        "vqkit_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": data,
    }


def write_result_file(path: str | Path, kind: str, data: dict[str, Any]) -> Path:
    """Write a result document to ``path`` (atomically) and return the path."""
    path = Path(path)
    write_json(path, result_doc(kind, data))
    return path


def write_result(run_dir: str | Path, name: str, kind: str, data: dict[str, Any]) -> Path:
    """Write a result document into the run folder under ``name`` (a name from runs.layout); for a
    read-only shipped model, into the working directory as ``MODEL-name`` (runs.shipped.output_path)."""
    return write_result_file(output_path(run_dir, name), kind, data)


def read_result(path: str | Path, kind: str) -> Result:
    """A result document of ``kind``, checked. RunError for broken JSON, another format, a newer
    format version, another kind, or no ``data`` object."""
    path = Path(path)
    try:
        doc = read_format_json(path, RESULT_FORMAT, RESULT_FORMAT_VERSION, "result")
        version = int(doc.get("format_version", 0))
    except RunError:
        raise
    except (ValueError, TypeError) as e:  # undecodable bytes, a version that is not a number
        raise RunError(f"{path} is not a vqkit result ({e})") from e
    if version < 1:
        raise RunError(f"{path} is not a vqkit result: it has no format_version")
    if doc.get("kind") != kind:
        raise RunError(f"{path} holds a {doc.get('kind')!r} result, not {kind!r}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise RunError(f"{path} is a {kind} result without a data object")
    return Result(kind, data, str(doc.get("vqkit_version", "?")), str(doc.get("created", "?")))
