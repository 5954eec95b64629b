"""The entropy models of a run folder: fitting the static table, reading it, the run's prior, and
carrying both to a decoder fine-tune.

``entropy_static.json`` in the run folder holds integer code counts from encoding training images,
stamped with the model's fingerprint; its coding table is ``tables.frequencies_from_counts`` of them
(add-one smoothing). A residual VQ run of S stages has one table per stage: ``counts`` is then S lists
of K counts (and ``stages`` says S); a single-stage run's file is one list, as it always was. The prior
is the run's ``vqkit.priors`` checkpoint. What codes with them, given the tables or the prior, is
vqkit.codec.entropy, which knows nothing of run folders.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vqkit.codec.container import CodecError
from vqkit.codec.tables import frequencies_from_counts
from vqkit.data import ImageSet, load_dataset
from vqkit.priors.build import Prior
from vqkit.priors.checkpoint import load_prior, prior_exists, read_prior_doc, save_prior
from vqkit.priors.integer import IntegerPrior
from vqkit.priors.model import CodePrior
from vqkit.runs import Run, RunError, model_fingerprint, read_format_json, run_lock, write_json
from vqkit.runs.layout import (
    INTEGER_PRIOR_FILE,
    MODEL_FILE,
    PRIOR_CONFIG_FILE,
    PRIOR_EVAL_FILE,
    PRIOR_FILE,
    STATIC_TABLE_FILE,
)

STATIC_FORMAT = "vqkit-entropy-static"
STATIC_FORMAT_VERSION = 1

__all__ = [
    "STATIC_FORMAT",
    "STATIC_FORMAT_VERSION",
    "STATIC_TABLE_FILE",
    "as_model_inputs",
    "carry_entropy_models",
    "fit_static_model",
    "load_run_prior",
    "load_static_table",
]


def as_model_inputs(images: ImageSet | Sequence[np.ndarray] | str | Path, channels: int) -> list[np.ndarray]:
    """Images (arrays of 1 to 4 channels, an ImageSet or a data spec) -> what the model encodes:
    alpha dropped, grey replicated for an RGB model; colour for a grey model is refused."""
    if isinstance(images, str | Path):
        return load_dataset(images, channels=channels).images
    arrays = images.images if isinstance(images, ImageSet) else list(images)
    out = []
    for im in arrays:
        im = im[:, :, None] if im.ndim == 2 else im
        if im.shape[2] in (2, 4):
            im = im[:, :, :-1]  # alpha plays no part in the codes
        if im.shape[2] == 1 and channels == 3:
            im = np.repeat(im, 3, axis=2)
        if im.shape[2] != channels:
            raise CodecError(f"the run encodes {channels}-channel images, got {im.shape[2]} channels")
        out.append(np.ascontiguousarray(im, dtype=np.uint8))
    return out


def fit_static_model(
    run_dir: str | Path,
    images: ImageSet | Sequence[np.ndarray] | str | Path,
    *,
    device: str = "cpu",
    precision: str = "auto",
    batch_size: int = 256,
) -> Path:
    """Count the codes of ``images`` (arrays, an ImageSet or a data spec; normally the training set)
    under the run's model and write ``entropy_static.json`` into the run folder. Returns its path.
    Holds the run folder's writer lock."""
    with run_lock(run_dir, "fitting the static table"):
        run = Run.load(run_dir, device, precision)
        arrays = as_model_inputs(images, run.channels)
        if not arrays:
            raise CodecError("fit_static_model needs at least one image")
        k, stages = run.model.codebook_size, run.stages
        counts = np.zeros((stages, k), dtype=np.int64)
        for start in range(0, len(arrays), 4096):
            for grid in run.encode(arrays[start : start + 4096], batch_size=batch_size):
                stage_grids = grid.reshape(stages, -1)  # (h, w) or (S, h, w) -> (S, h*w)
                counts += np.stack([np.bincount(g, minlength=k) for g in stage_grids])
        doc: dict[str, object] = {
            "format": STATIC_FORMAT,
            "format_version": STATIC_FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model_fingerprint": model_fingerprint(run.path),
            "codebook_size": k,
            "images": len(arrays),
            "codes": int(counts.sum()),
            "source": str(images) if isinstance(images, str | Path) else f"{len(arrays)} images",
            "counts": counts[0].tolist() if stages == 1 else counts.tolist(),
        }
        if stages > 1:
            doc["stages"] = stages
        path = run.path / STATIC_TABLE_FILE
        write_json(path, doc)
        return path


def load_static_table(run_dir: Path, codebook_size: int, digest: bytes, stages: int = 1) -> np.ndarray | None:
    """The run's (S, K) integer coding tables, one per stage, or None when the run has no static
    model."""
    path = Path(run_dir) / STATIC_TABLE_FILE
    if not path.is_file():
        return None
    doc = read_format_json(path, STATIC_FORMAT, STATIC_FORMAT_VERSION, "static entropy model")
    if doc.get("model_fingerprint") != digest[:8].hex():
        raise RunError(
            f"{path} was fitted for another model; refit it (vqkit compress RUN --fit-static DATA)"
        )
    counts = doc.get("counts")
    rows = [counts] if stages == 1 else counts
    if (
        not isinstance(rows, list)
        or len(rows) != stages
        or doc.get("stages", 1) != stages
        or not all(
            isinstance(row, list)
            and len(row) == codebook_size
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in row)
            for row in rows
        )
    ):
        shape = f"{codebook_size}" if stages == 1 else f"{stages} lists of {codebook_size}"
        raise RunError(f"{path}: 'counts' must be {shape} non-negative integers")
    return np.stack([frequencies_from_counts(np.array(row, dtype=np.int64)) for row in rows])


def load_run_prior(run_dir: Path) -> Prior | None:
    """The run's prior when it has one, else None. A prior that exists but cannot be read (or belongs
    to another model) is an error, never silently "no prior"."""
    if not prior_exists(run_dir):
        return None
    return load_prior(run_dir)


def load_integer_prior(run_dir: Path) -> IntegerPrior | None:
    """The integer network of the run's grouped prior (entropy model GROUPED), or None when the run
    has none. One written for another VQ-VAE is an error."""
    path = Path(run_dir) / INTEGER_PRIOR_FILE
    if not path.is_file():
        return None
    prior = IntegerPrior.load(path)
    made_for, expected = prior.info.get("model_fingerprint"), model_fingerprint(run_dir)
    if made_for != expected:
        raise RunError(
            f"{path} was made for another VQ-VAE (fingerprint {made_for}, the run's model is {expected}); "
            f"retrain the prior with `vqkit prior train {run_dir} --set model.kind=grouped`"
        )
    return prior


def load_serial_prior(run_dir: Path) -> CodePrior | None:
    """The run's serial prior (entropy models PRIOR and PRIOR_OVERLAP), or None when the run has no
    prior or a grouped one (which codes through its integer network instead)."""
    prior = load_run_prior(run_dir)
    return prior if isinstance(prior, CodePrior) else None


def carry_entropy_models(source: str | Path, run_dir: str | Path) -> list[Path]:
    """Give ``run_dir`` the static table and the prior of ``source`` (those it has), re-stamped with
    ``run_dir``'s model fingerprint, and return the files written. Only for runs that compute the
    same codes: every tensor outside the decoder must be bitwise equal (a decoder fine-tune,
    ``train.trainable=decoder``), else RunError. Entropy models describe codes, not pictures, so
    they hold unchanged; files compressed before still need the run that wrote them. Holds
    ``run_dir``'s writer lock."""
    with run_lock(run_dir, "carrying entropy models"):
        return _carry_entropy_models(Path(source), Path(run_dir))


def _carry_entropy_models(source: Path, run_dir: Path) -> list[Path]:
    source, run_dir = Path(source), Path(run_dir)
    theirs, ours = (_load_weights(d) for d in (source, run_dir))
    shared = sorted(k for k in theirs if not k.startswith("decoder."))
    if shared != sorted(k for k in ours if not k.startswith("decoder.")) or not all(
        theirs[k].dtype == ours[k].dtype and torch.equal(theirs[k], ours[k]) for k in shared
    ):
        raise RunError(
            f"{run_dir} does not compute the codes of {source} (its encoder or codebook differ), "
            "so that run's entropy models do not hold for it"
        )
    fingerprint = model_fingerprint(run_dir)
    carried = {"from": str(source), "model_fingerprint": model_fingerprint(source)}
    written: list[Path] = []
    static = source / STATIC_TABLE_FILE
    if static.is_file():
        doc = read_format_json(static, STATIC_FORMAT, STATIC_FORMAT_VERSION, "static entropy model")
        if doc.get("model_fingerprint") != carried["model_fingerprint"]:
            raise RunError(f"{static} was fitted for another model than {source}'s; refit it first")
        write_json(
            run_dir / STATIC_TABLE_FILE, {**doc, "model_fingerprint": fingerprint, "carried_from": carried}
        )
        written.append(run_dir / STATIC_TABLE_FILE)
    prior = load_run_prior(source)  # checks that the prior belongs to source's model
    if prior is not None:
        doc = read_prior_doc(source)
        # What write_prior_doc sets anew stays out; the prior's own training command goes along.
        fresh = ("format", "format_version", "vqkit_version", "saved", "argv", "model_fingerprint", "prior")
        info = {k: v for k, v in doc.items() if k not in fresh}
        info["carried_from"] = {**carried, "argv": doc.get("argv")}
        integer = load_integer_prior(source)  # a grouped prior's integer network goes along
        if integer is not None:
            integer.info["model_fingerprint"] = fingerprint  # info is outside its digest: codes are the same
        save_prior(run_dir, prior, info=info, fingerprint=fingerprint, integer=integer)
        written += [run_dir / PRIOR_FILE, run_dir / PRIOR_CONFIG_FILE]
        written += [run_dir / INTEGER_PRIOR_FILE] if integer is not None else []
        evaluation = source / PRIOR_EVAL_FILE
        if evaluation.is_file():  # an evaluation of codes, which are the same here
            shutil.copyfile(evaluation, run_dir / PRIOR_EVAL_FILE)
            written.append(run_dir / PRIOR_EVAL_FILE)
    return written


def _load_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    path = run_dir / MODEL_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no trained weights ({MODEL_FILE} is missing)")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise RunError(f"cannot read {path}: {e}") from e
