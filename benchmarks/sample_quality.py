"""Sample quality: the Fréchet distance between feature statistics of two image sets (FID when the
features are Inception-v3's; Heusel et al. 2017, eq. 6).

Inception weights are not shipped, so the default figure is a proxy: the same distance on the
penultimate features of a small CNN classifier trained for a few minutes on real training images.
Its values are not comparable with published FIDs, only with each other (same classifier, same sets).
Benchmark code (benchmarks/prior_quality.py), not part of the library; tests/test_sample_quality.py
checks the distance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from vqkit.data import DataError, random_crop_flip, to_float

FeatureFn = Callable[[Tensor], Tensor]  # images (B, C, H, W) in [0, 1] -> features (B, F)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature rows a (N, F) and b (M, F)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return frechet_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def frechet_from_stats(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), with symmetric eigendecompositions
    (the inner matrix is symmetric positive semi-definite, so no complex square roots arise)."""
    vals, vecs = np.linalg.eigh(cov1)
    root1 = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T
    inner = root1 @ cov2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * cross)


class FeatureNet(nn.Module):
    """A small CIFAR-sized classifier; ``features`` is its penultimate layer (256 values)."""

    def __init__(self, channels: int = 3, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.trunk = nn.Sequential(
            stage(channels, width), stage(width, 2 * width), stage(2 * width, 4 * width)
        )
        self.embed = nn.Sequential(
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(4 * width * 16, 256), nn.ReLU()
        )
        self.classify = nn.Linear(256, num_classes)

    def features(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) in [0, 1] -> (B, 256)."""
        return self.embed(self.trunk(images * 2.0 - 1.0))

    def forward(self, images: Tensor) -> Tensor:
        return self.classify(self.features(images))


def train_feature_net(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    minutes: float,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> tuple[FeatureNet, dict[str, float]]:
    """Train on (N, H, W, C) uint8 images for ``minutes`` (flips and 4-pixel shifts); returns the net in
    eval mode and its training statistics, with the accuracy on 5 % of the images held out."""
    if len(images) != len(labels) or len(images) < 20:
        raise DataError("the feature classifier needs at least 20 labelled images")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    n_hold = max(1, len(images) // 20)
    hold, train = order[:n_hold], order[n_hold:]
    torch.manual_seed(seed)
    net = FeatureNet(images.shape[3], int(labels.max()) + 1)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    data = torch.from_numpy(images)
    target = torch.from_numpy(labels.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    budget, t0, step = minutes * 60.0, time.perf_counter(), 0
    bar = tqdm(total=round(budget), unit="s", disable=not progress, desc="classifier")
    net.train()
    while time.perf_counter() - t0 < budget:
        rows = torch.from_numpy(train[rng.integers(0, len(train), batch_size)])
        x = random_crop_flip(to_float(data[rows]), images.shape[1], gen, pad=4)
        loss = F.cross_entropy(net(x), target[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.n = min(round(time.perf_counter() - t0), round(budget))
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    bar.close()
    net.eval()
    with torch.no_grad():
        correct = sum(
            int((net(to_float(data[torch.from_numpy(c)])).argmax(1) == target[c]).sum())
            for c in np.array_split(hold, max(1, len(hold) // 500))
        )
    return net, {"steps": step, "seconds": time.perf_counter() - t0, "holdout_accuracy": correct / len(hold)}


@torch.no_grad()
def extract_features(
    fn: FeatureFn, images: list[np.ndarray] | np.ndarray, batch_size: int = 250
) -> np.ndarray:
    """(H, W, C) uint8 images -> (N, F) float64 features."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.stack(list(images[start : start + batch_size])))
        out.append(fn(to_float(batch)).double().reshape(len(batch), -1).numpy())
    return np.concatenate(out)


def load_inception(path: str | Path) -> FeatureFn:
    """A TorchScript Inception feature extractor (e.g. the 2048-d pool features used for FID) that takes
    (B, 3, H, W) floats in [0, 255]; images are resized to 299 x 299 first. Safetensors files hold no
    architecture, so they are refused with an explanation."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Inception weights not found: {path}")
    if path.suffix == ".safetensors":
        raise DataError(f"{path}: a .safetensors file holds weights only; give a TorchScript export (.pt)")
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # TorchScript raises several types for foreign files
        raise DataError(f"cannot load {path} as TorchScript: {e}") from e

    def features(images: Tensor) -> Tensor:
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 255.0
        out = module(x)
        return out[0] if isinstance(out, tuple | list) else out

    return features
