"""How much class information do a run's features carry? Linear probe and k-NN accuracy.

Feature kinds, each scored by the same two classifiers:
  codes    bag-of-codes histograms (N, K)            (VQ runs only)
  latents  mean- and max-pooled encoder output (N, 2D)
  pixels   the images themselves, area-downsampled to ``pixel_size`` and flattened (baseline)
Linear probe: multinomial logistic regression on standardised features (scikit-learn). k-NN: majority
vote of the k nearest training images by cosine similarity of the raw features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vqkit.data import DataError, ImageSet, iter_batches, to_float
from vqkit.runs import Run
from vqkit.tasks.features import Features, extract_features, sample_images


@dataclass(frozen=True)
class ProbeSettings:
    k: int = 10  # neighbours for k-NN
    max_train: int | None = None  # random subset of the training images (seeded)
    max_test: int | None = None
    pixel_size: int = 16  # side of the downsampled pixel baseline
    max_iter: int = 1000  # logistic-regression iterations
    seed: int = 0
    batch_size: int = 256


def pixel_features(images: list[np.ndarray], size: int) -> np.ndarray:
    """(N, C * size * size) float32: each image area-resized to size x size, flattened."""
    out = []
    for batch in iter_batches(images, 1024):
        x = to_float(torch.from_numpy(np.stack(batch)))
        out.append(F.interpolate(x, size=(size, size), mode="area").flatten(1).numpy())
    return np.concatenate(out).astype(np.float32)


def classify(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, settings: ProbeSettings
) -> dict[str, float]:
    """Accuracy of the linear probe and of k-NN, trained on (train_x, train_y)."""
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=settings.max_iter))
    linear.fit(train_x, train_y)
    k = min(settings.k, len(train_x))
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    knn.fit(train_x, train_y)
    return {
        "linear": float((linear.predict(test_x) == test_y).mean()),
        "knn": float((knn.predict(test_x) == test_y).mean()),
        "dims": int(train_x.shape[1]),
    }


def _require_labels(data: ImageSet, role: str) -> np.ndarray:
    if data.labels is None:
        raise DataError(f"{data.source}: the {role} data has no labels (a probe needs class labels)")
    return data.labels


def feature_kinds(features: Features) -> dict[str, np.ndarray]:
    kinds = {"latents": features.latents}
    if features.histograms is not None:
        kinds = {"codes": features.histograms, **kinds}
    return kinds


def run_probes(
    run: Run | None, train: ImageSet, test: ImageSet, settings: ProbeSettings, *, pixels: bool = True
) -> dict[str, Any]:
    """Accuracy per feature kind; ``run=None`` scores the pixel baseline only. The result holds
    ``results[kind] = {linear, knn, dims}``, the data sizes, and chance (the majority-class rate)."""
    train = sample_images(train, settings.max_train, settings.seed)
    test = sample_images(test, settings.max_test, settings.seed + 1)
    train_y, test_y = _require_labels(train, "training"), _require_labels(test, "test")
    if len(np.unique(train_y)) < 2:
        raise DataError(f"{train.source}: the training data holds a single class")
    results: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    if run is not None:
        f_train = extract_features(run, train, settings.batch_size)
        f_test = extract_features(run, test, settings.batch_size)
        for kind, x in feature_kinds(f_train).items():
            results[kind] = classify(x, train_y, feature_kinds(f_test)[kind], test_y, settings)
        if f_train.histograms is None:
            notes.append("quantization is disabled in this run: no code histograms, latents only")
    if pixels:
        px_train = pixel_features(train.images, settings.pixel_size)
        px_test = pixel_features(test.images, settings.pixel_size)
        results["pixels"] = classify(px_train, train_y, px_test, test_y, settings)
    majority = np.bincount(test_y).max() / len(test_y)
    return {
        "num_train": len(train),
        "num_test": len(test),
        "num_classes": int(max(train_y.max(), test_y.max()) + 1),
        "chance": float(majority),
        "k": settings.k,
        "pixel_size": settings.pixel_size,
        "classifiers": {
            "linear": "logistic regression on standardised features",
            "knn": f"{settings.k}-NN, cosine similarity of raw features",
        },
        "results": results,
        "notes": notes,
    }


def format_probe_table(result: dict[str, Any]) -> str:
    lines = [f"{'features':<10} {'dims':>6} {'linear':>8} {'k-NN':>8}"]
    for kind, r in result["results"].items():
        lines.append(f"{kind:<10} {r['dims']:>6d} {r['linear']:>8.4f} {r['knn']:>8.4f}")
    lines.append(f"{'chance':<10} {'':>6} {result['chance']:>8.4f} {result['chance']:>8.4f}")
    lines.append(f"({result['num_train']} training, {result['num_test']} test images)")
    return "\n".join(lines)
