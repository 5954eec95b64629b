"""Per-image features from a run: code grids, bag-of-codes histograms, pooled continuous latents.

For image i with encoder output z_i (D, h, w) and codes c_i (h, w):
  histogram[i, k]  = #{positions with code k} / (h * w)        (K,), rows sum to 1
A residual VQ run of S stages has codes c_i (S, h, w): its histogram is the S stages' histograms side
by side, (S*K,), each divided by S so the row still sums to 1 (bag of codes per stage; stage s's code
k is entry s*K + k), and ``indices`` are (S, h, w).
  latent_mean[i]   = mean of z_i over positions                 (D,)
  latent_max[i]    = max of z_i over positions                  (D,)
A plain-autoencoder run (quantization disabled) has no codes: indices and histograms are None.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqkit.data import DataError, ImageSet, iter_batches, load_dataset, split_holdout, to_float, to_uint8_hwc
from vqkit.runs import Run


@dataclass
class EncodedBatch:
    images: np.ndarray  # (B, H, W, C) uint8, as given
    z: torch.Tensor  # (B, D, h, w) encoder output
    quantized: torch.Tensor  # (B, D, h, w); z itself for a plain autoencoder
    indices: torch.Tensor | None  # (B, h, w) int64 ((B, S, h, w) for S stages); None for a plain autoencoder
    reconstruction: np.ndarray | None  # (B, H, W, C) uint8 when asked for


def iter_encoded(
    run: Run, images: list[np.ndarray], batch_size: int = 256, *, decode: bool = False
) -> Iterator[EncodedBatch]:
    """Encode images in batches of equal size (sizes may differ between batches), in input order,
    the way ``Run.encode`` does (inference mode, the run's precision, channels-last), so the codes
    are the ones ``vqkit encode`` gives. The tensors are inference tensors: read them, don't train."""
    model = run.model.eval()
    quantized_run = model.quantizer.discrete
    for batch in iter_batches(images, batch_size):
        array = np.stack(batch)
        with run.inference():  # the context is not held across the yield
            x = to_float(torch.from_numpy(array)).to(run.device).contiguous(memory_format=torch.channels_last)
            z = model.encode_latents(x)
            q = model.quantize(z)
            recon = None
            if decode:
                h, w = array.shape[1:3]
                if quantized_run:  # the decoder Run.decode and Run.reconstruct use
                    recon = run.decode_tensor(q.indices, (h, w))
                else:
                    recon = to_uint8_hwc(model.decode(q.quantized).float().clamp(0, 1)[..., :h, :w].cpu())
        yield EncodedBatch(array, z, q.quantized, q.indices if quantized_run else None, recon)


@dataclass
class Features:
    names: tuple[str, ...]
    latent_mean: np.ndarray  # (N, D) float32
    latent_max: np.ndarray  # (N, D) float32
    histograms: np.ndarray | None  # (N, S*K) float64, rows sum to 1; None without quantization
    indices: list[np.ndarray] | None  # N grids (h, w) ((S, h, w)) int64; None without quantization
    labels: np.ndarray | None  # (N,) int64
    class_names: tuple[str, ...] | None
    codebook_size: int | None
    stages: int = 1  # S, codes per position (residual VQ: S > 1)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def latents(self) -> np.ndarray:
        """(N, 2D): mean- and max-pooled encoder outputs side by side."""
        return np.concatenate([self.latent_mean, self.latent_max], axis=1)


def code_histograms(indices: torch.Tensor, codebook_size: int, stages: int = 1) -> torch.Tensor:
    """(B, h, w) codes -> (B, K) normalised counts (each row sums to 1); with ``stages`` S > 1,
    (B, S, h, w) -> (B, S*K), stage s's counts at s*K.. (s+1)*K, each stage's summing to 1/S."""
    if stages > 1:
        per_stage = [code_histograms(indices[:, s], codebook_size) for s in range(stages)]
        return torch.cat(per_stage, dim=1) / stages
    b = indices.shape[0]
    flat = indices.reshape(b, -1)
    counts = torch.zeros(b, codebook_size, dtype=torch.float64, device=indices.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    return counts / flat.shape[1]


def extract_features(run: Run, data: ImageSet, batch_size: int = 256) -> Features:
    """Features of every image in ``data`` (any sizes)."""
    if len(data) == 0:
        raise DataError(f"{data.source}: no images to extract features from")
    k = run.model.quantizer.codebook_size
    stages = run.stages
    means: list[np.ndarray] = []
    maxes: list[np.ndarray] = []
    hists: list[np.ndarray] = []
    grids: list[np.ndarray] = []
    for enc in iter_encoded(run, data.images, batch_size):
        means.append(enc.z.float().mean(dim=(2, 3)).cpu().numpy())
        maxes.append(enc.z.float().amax(dim=(2, 3)).cpu().numpy())
        if enc.indices is not None and k is not None:
            hists.append(code_histograms(enc.indices, k, stages).cpu().numpy())
            grids.extend(enc.indices.cpu().numpy())
    return Features(
        names=data.names,
        latent_mean=np.concatenate(means).astype(np.float32),
        latent_max=np.concatenate(maxes).astype(np.float32),
        histograms=np.concatenate(hists) if hists else None,
        indices=grids if hists else None,
        labels=data.labels,
        class_names=data.class_names,
        codebook_size=k,
        stages=stages,
    )


def save_features(path: str | Path, features: Features) -> None:
    """features.npz: ``latent_mean``, ``latent_max`` (N, D), ``names``; with codes ``histograms``
    (N, S*K) and ``indices`` (N, h, w) or (N, S, h, w) when every grid has one shape (else
    ``indices_<i>``), with ``stages`` S;
    ``labels`` and ``class_names`` when the data has them."""
    arrays: dict[str, np.ndarray] = {
        "names": np.array(features.names),
        "latent_mean": features.latent_mean,
        "latent_max": features.latent_max,
    }
    if features.histograms is not None and features.indices is not None:
        arrays["histograms"] = features.histograms
        arrays["codebook_size"] = np.array(features.codebook_size)
        arrays["stages"] = np.array(features.stages)
        if len({g.shape for g in features.indices}) == 1:
            arrays["indices"] = np.stack(features.indices)
        else:
            arrays.update({f"indices_{i}": g for i, g in enumerate(features.indices)})
    if features.labels is not None:
        arrays["labels"] = features.labels
    if features.class_names is not None:
        arrays["class_names"] = np.array(features.class_names)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def sample_images(data: ImageSet, limit: int | None, seed: int = 0) -> ImageSet:
    """A seeded random subset of at most ``limit`` images, kept in data order. Random, not the first
    ``limit``: folders load sorted by class, so a prefix would hold only the first classes."""
    if limit is None or len(data) <= limit:
        return data
    return data.subset(np.sort(np.random.default_rng(seed).permutation(len(data))[:limit]))


def load_run_eval_set(run: Run, max_images: int | None = None) -> tuple[ImageSet, str]:
    """The images a run is judged on when no data is named: its ``data.eval_spec`` when set, else
    the held-out split of its training data (the same split training used), else all of it."""
    dc = run.config.data
    if dc.eval_spec:
        return sample_images(load_dataset(dc.eval_spec, channels=run.channels), max_images), dc.eval_spec
    data = load_dataset(dc.spec, channels=run.channels, max_images=dc.max_images)
    _, hold = split_holdout(len(data), dc.holdout, seed=run.config.train.seed)
    if data.uniform_size is not None and len(hold):
        data, described = data.subset(hold), f"{dc.spec} (held-out split, {len(hold)} images)"
    else:
        described = f"{dc.spec} (all images)"
    return sample_images(data, max_images), described
