"""Code grids of a data set, encoded once by a run's VQ-VAE and cached in the run folder.

``codes_<hash of the data spec>.npz`` holds ``indices`` (N, h, w) int16/int32, optional ``labels`` and
``class_names``, the ``image_size`` the grids encode, the ``spec`` and the ``model_fingerprint``; it is
reused only while the fingerprint matches the run's current weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vqkit.data import DataError, ImageSet, load_dataset
from vqkit.runs import Run, atomic_write, model_fingerprint, shipped

ENCODE_CHUNK = 2048  # images per progress-bar tick


@dataclass(frozen=True, eq=False)
class CodeSet:
    """Index grids of one data set: indices (N, h, w) int64, labels (N,) int64 or None."""

    indices: np.ndarray
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    image_size: tuple[int, int] | None = None  # (H, W) of the images, for bits per pixel

    def __post_init__(self) -> None:
        if self.indices.ndim != 3 or self.indices.dtype != np.int64:
            raise DataError(f"indices must be (N, h, w) int64, got {self.indices.dtype} {self.indices.shape}")
        if self.labels is not None and (
            self.labels.dtype != np.int64 or self.labels.shape != (len(self.indices),)
        ):
            raise DataError(f"labels must be ({len(self.indices)},) int64, got {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.indices.shape[1]), int(self.indices.shape[2])

    @property
    def num_classes(self) -> int:
        """Classes the labels name (0 without labels)."""
        if self.labels is None:
            return 0
        top = int(self.labels.max()) + 1 if len(self.labels) else 0
        return max(top, len(self.class_names or ()))

    def subset(self, idx: np.ndarray) -> CodeSet:
        labels = None if self.labels is None else self.labels[idx]
        return CodeSet(self.indices[idx], labels, self.class_names, self.image_size)

    def spread(self, count: int) -> CodeSet:
        """At most ``count`` grids evenly spaced over the whole set, in order (all when it is smaller).

        For capped evaluations: data sets are often ordered by source (class folders, or a base set
        followed by added crops), so the first ``count`` grids can all come from one part of it."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if len(self) <= count:
            return self
        return self.subset(np.linspace(0, len(self) - 1, count).round().astype(np.int64))


def canonical_spec(spec: str) -> str:
    """The spec with paths made absolute, so one data set gets one cache file from any folder."""
    text = str(spec).strip()
    if text == "builtin":
        return text
    for split in (":train", ":test"):
        if text.endswith(split) and not Path(text).exists():
            return str(Path(text[: -len(split)]).resolve()) + split
    return str(Path(text).resolve())


def codes_path(run_dir: Path, spec: str) -> Path:
    digest = hashlib.sha256(canonical_spec(spec).encode()).hexdigest()[:12]
    return Path(run_dir) / f"codes_{digest}.npz"


def _read_cache(path: Path, spec: str, fingerprint: str) -> CodeSet | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["model_fingerprint"]) != fingerprint or str(z["spec"]) != canonical_spec(spec):
                return None
            labels = z["labels"].astype(np.int64) if "labels" in z else None
            names = tuple(str(s) for s in z["class_names"]) if "class_names" in z else None
            size = (int(z["image_size"][0]), int(z["image_size"][1]))
            return CodeSet(z["indices"].astype(np.int64), labels, names, size)
    except (OSError, ValueError, KeyError):
        return None  # damaged or foreign: encode again


def _write_cache(path: Path, codes: CodeSet, spec: str, fingerprint: str, codebook_size: int) -> None:
    dtype = np.int16 if codebook_size <= 2**15 else np.int32
    arrays: dict[str, np.ndarray] = {
        "indices": codes.indices.astype(dtype),
        "image_size": np.array(codes.image_size, dtype=np.int64),
        "spec": np.array(canonical_spec(spec)),
        "model_fingerprint": np.array(fingerprint),
    }
    if codes.labels is not None:
        arrays["labels"] = codes.labels
    if codes.class_names:
        arrays["class_names"] = np.array(codes.class_names)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(f, **arrays)  # type: ignore[arg-type]

    atomic_write(path, write)


def encode_images(run: Run, images: list[np.ndarray], progress: bool = False) -> np.ndarray:
    """(H, W, C) uint8 images of one size -> (N, h, w) int64 grids, batched, without gradients."""
    grids: list[np.ndarray] = []
    chunks = range(0, len(images), ENCODE_CHUNK)
    for start in tqdm(chunks, desc="encode", unit="chunk", disable=not progress or len(chunks) < 2):
        grids.extend(run.encode(images[start : start + ENCODE_CHUNK]))
    return np.stack(grids).astype(np.int64)


def _encodable(run: Run, data: ImageSet) -> tuple[list[np.ndarray], np.ndarray | None, tuple[int, int]]:
    """The images ``load_codes`` encodes, their labels and size: the images themselves when they share one
    size, else crops of the run's training size (labels dropped: a crop's label is not known to be its
    image's)."""
    size = data.uniform_size
    if size is not None:
        return data.images, data.labels, size
    side = run.config.data.image_size
    return list(data.patches(side)), None, (side, side)


def _load_images(run: Run, spec: str, data: ImageSet | None, progress: bool) -> ImageSet:
    if data is None:
        data = load_dataset(spec, channels=run.channels, progress=progress)
    elif data.channels != run.channels:
        raise DataError(f"{spec} has {data.channels} channels; the run expects {run.channels}")
    if not data.images:
        raise DataError(f"{spec}: no images")
    return data


def _encode_cached(
    run: Run,
    spec: str,
    path: Path,
    versions: Callable[[list[np.ndarray]], Iterator[list[np.ndarray]]],
    *,
    progress: bool,
    cache: bool,
    data: ImageSet | None,
) -> CodeSet:
    """Grids of every version (``versions(images)``, one list per version) of the images of ``spec``,
    version after version (labels repeated), from the cache file ``path`` while it is valid."""
    fingerprint = model_fingerprint(run.path)
    cache = cache and shipped.shipped_name(run.path) is None  # a shipped model's folder is read-only
    if cache and path.is_file():
        found = _read_cache(path, spec, fingerprint)
        if found is not None:
            return found
    data = _load_images(run, spec, data, progress)
    images, labels, size = _encodable(run, data)
    grids = [encode_images(run, batch, progress) for batch in versions(images)]
    labels = None if labels is None else np.tile(labels, len(grids))
    codes = CodeSet(np.concatenate(grids), labels, data.class_names if labels is not None else None, size)
    if cache:
        _write_cache(path, codes, spec, fingerprint, run.model.codebook_size)
    return codes


def load_codes(
    run: Run, spec: str, *, progress: bool = False, cache: bool = True, data: ImageSet | None = None
) -> CodeSet:
    """The code grids of data set ``spec`` under ``run``'s VQ-VAE, from the cache when it is valid.
    ``data``: the images of ``spec`` when the caller has loaded them already.

    Images of one size are encoded whole; mixed sizes are cut into crops of the run's training size
    (labels are then dropped, as a crop's label is not known to be its image's)."""
    return _encode_cached(run, spec, codes_path(run.path, spec), lambda images: iter([images]),
                          progress=progress, cache=cache, data=data)  # fmt: skip


def augmented_copy(images: list[np.ndarray], *, shift: int, flip: bool, seed: int) -> list[np.ndarray]:
    """One copy of each (H, W, C) image, mirrored left-right with probability 1/2 (when ``flip``) and
    translated by (dy, dx) drawn uniformly from [-shift, shift]^2, the uncovered border filled by
    reflection so no flat band appears that real images lack. A pure function of ``seed``."""
    rng = np.random.default_rng(seed)
    flips = rng.random(len(images)) < 0.5 if flip else np.zeros(len(images), dtype=bool)
    moves = rng.integers(-shift, shift + 1, size=(len(images), 2))
    out: list[np.ndarray] = []
    for img, mirror, (dy, dx) in zip(images, flips, moves, strict=True):
        h, w = img.shape[:2]
        if mirror:
            img = img[:, ::-1]
        if shift:
            pad = ((shift, shift), (shift, shift), (0, 0))
            # reflect needs a side longer than the pad
            padded = (
                np.pad(img, pad, mode="reflect") if min(h, w) > shift else np.pad(img, pad, mode="symmetric")
            )
            img = padded[shift - dy : shift - dy + h, shift - dx : shift - dx + w]
        out.append(np.ascontiguousarray(img))
    return out


def load_augmented_codes(
    run: Run,
    spec: str,
    *,
    copies: int,
    shift: int,
    flip: bool,
    seed: int,
    progress: bool = False,
    cache: bool = True,
    data: ImageSet | None = None,
) -> CodeSet:
    """Grids of ``copies`` augmented copies (`augmented_copy`; copy c seeded by seed * 1,000,003 + c) of
    every image that ``load_codes`` encodes: copy c of image i is row c * N + i, so a caller keeps the
    copies of its training images only. Cached beside the plain codes, keyed by the augmentation settings."""
    if copies < 1:
        raise ValueError("load_augmented_codes needs copies >= 1")
    plain = codes_path(run.path, spec)
    path = plain.with_name(f"{plain.stem}_aug{copies}-shift{shift}-flip{int(flip)}-seed{seed}.npz")

    def versions(images: list[np.ndarray]) -> Iterator[list[np.ndarray]]:
        for c in range(copies):
            yield augmented_copy(images, shift=shift, flip=flip, seed=seed * 1_000_003 + c)

    return _encode_cached(run, spec, path, versions, progress=progress, cache=cache, data=data)
