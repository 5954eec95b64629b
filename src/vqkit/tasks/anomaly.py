"""Per-image anomaly scores from a run (higher = more unusual), and their AUROC on labelled data.

reconstruction_mse   mean squared error of the 8-bit reconstruction (0-255 scale): images unlike
                     the training data reconstruct badly
quantization_error   mean squared distance between the encoder output z and its chosen codes:
                     unfamiliar inputs land far from every codeword (VQ runs only)
code_nll_bits        bits per code under the run's autoregressive prior: unlikely code
                     arrangements (runs with a prior whose grid matches the images)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from vqkit.data import DataError, ImageSet
from vqkit.priors import load_prior, prior_exists
from vqkit.runs import Run, RunError
from vqkit.tasks.features import iter_encoded

SCORES = {
    "reconstruction_mse": "mean squared error of the 8-bit reconstruction (0-255 scale)",
    "quantization_error": "mean squared distance between encoder output and its codes",
    "code_nll_bits": "negative log-likelihood of the code grid under the prior, bits per code",
}


def load_prior_if_any(run: Run) -> tuple[Any | None, str | None]:
    """(the run's prior, None), or (None, the reason there is none)."""
    if not run.model.quantizer.discrete:
        return None, "quantization is disabled in this run: no codes, no prior"
    if run.stages > 1:
        return None, "a residual VQ run has no prior (the prior models single-stage code grids)"
    if not prior_exists(run.path):
        return None, "the run has no prior (`vqkit prior train RUN` adds one)"
    try:
        return load_prior(run.path, run.device), None
    except RunError as e:
        return None, f"the run's prior is not usable: {e}"


def anomaly_scores(
    run: Run, images: list[np.ndarray], prior: Any | None = None, batch_size: int = 256
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Scores per image (in input order) and notes on scores that could not be computed."""
    mse: list[np.ndarray] = []
    qerr: list[np.ndarray] = []
    nll: list[np.ndarray] = []
    notes: list[str] = []
    for enc in iter_encoded(run, images, batch_size, decode=True):
        assert enc.reconstruction is not None
        diff = enc.reconstruction.astype(np.float64) - enc.images.astype(np.float64)
        mse.append((diff**2).reshape(len(diff), -1).mean(1))
        if enc.indices is None:
            continue
        qerr.append((enc.z.float() - enc.quantized.float()).pow(2).mean(dim=(1, 2, 3)).cpu().numpy())
        if prior is not None and tuple(enc.indices.shape[1:]) != tuple(prior.config.grid):
            notes.append(
                f"code_nll_bits skipped: images give {tuple(enc.indices.shape[1:])} code grids, the "
                f"prior models {tuple(prior.config.grid)}"
            )
            prior = None
        if prior is not None:
            with torch.inference_mode():
                bits = prior.nll_bits(enc.indices.to(next(prior.parameters()).device))
            nll.append(bits.float().cpu().numpy() / enc.indices[0].numel())
    scores = {"reconstruction_mse": np.concatenate(mse)}
    if qerr:
        scores["quantization_error"] = np.concatenate(qerr)
    if prior is not None and nll:
        scores["code_nll_bits"] = np.concatenate(nll)
    return scores, notes


def _class_ids(tokens: str, class_names: tuple[str, ...] | None) -> set[int]:
    ids = set()
    for token in (t.strip() for t in tokens.split(",") if t.strip()):
        if class_names and token in class_names:
            ids.add(class_names.index(token))
        elif token.isdigit():
            ids.add(int(token))
        else:
            known = ", ".join(class_names) if class_names else "none; use class numbers"
            raise DataError(f"unknown class {token!r} (class names: {known})")
    return ids


def anomaly_mask(
    data: ImageSet, *, normal_classes: str | None = None, anomaly_class: str | None = None
) -> np.ndarray:
    """(N,) bool, True for the anomalies: images outside ``normal_classes``, or in ``anomaly_class``."""
    if (normal_classes is None) == (anomaly_class is None):
        raise DataError("give exactly one of --normal-classes and --anomaly-class")
    if data.labels is None:
        raise DataError(f"{data.source} has no labels: AUROC needs to know which images are anomalies")
    if normal_classes is not None:
        mask = ~np.isin(data.labels, sorted(_class_ids(normal_classes, data.class_names)))
    else:
        assert anomaly_class is not None
        mask = np.isin(data.labels, sorted(_class_ids(anomaly_class, data.class_names)))
    _require_both(mask)
    return mask


def _require_both(is_anomaly: np.ndarray) -> None:
    if is_anomaly.all() or not is_anomaly.any():
        raise DataError(
            f"AUROC needs both normal and anomalous images (found {int(is_anomaly.sum())} "
            f"anomalies among {len(is_anomaly)})"
        )


def aurocs(scores: dict[str, np.ndarray], is_anomaly: np.ndarray) -> dict[str, float]:
    """Area under the ROC curve per score (1.0: every anomaly scores above every normal image)."""
    _require_both(is_anomaly)
    return {name: float(roc_auc_score(is_anomaly, s)) for name, s in scores.items()}


def anomaly_summary(scores: dict[str, np.ndarray], is_anomaly: np.ndarray | None) -> dict[str, Any]:
    """Means per score (per group when the anomalies are known) and the AUROCs."""
    doc: dict[str, Any] = {
        "scores": {k: SCORES[k] for k in scores},
        "num_images": len(next(iter(scores.values()))),
    }
    doc["mean"] = {k: float(v.mean()) for k, v in scores.items()}
    if is_anomaly is not None:
        doc["auroc"] = aurocs(scores, is_anomaly)
        doc["num_anomalies"] = int(is_anomaly.sum())
        doc["mean_normal"] = {k: float(v[~is_anomaly].mean()) for k, v in scores.items()}
        doc["mean_anomalous"] = {k: float(v[is_anomaly].mean()) for k, v in scores.items()}
    return doc
