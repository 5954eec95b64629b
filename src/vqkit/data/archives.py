"""Datasets stored as arrays rather than image files: ``.npz`` files, CIFAR-10/100 "python version"
batches (read with a restricted unpickler) and MNIST IDX files (raw or gzip). Each reader returns a
`Loaded` record that `vqkit.data.datasets` turns into an `ImageSet`.
"""

from __future__ import annotations

import gzip
import itertools
import math
import os
import pickle
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import numpy as np

from vqkit.data.errors import DataError


class Loaded(NamedTuple):
    images: list[np.ndarray]  # (H, W, C) uint8, C in 1..4 before channel resolution
    labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    names: tuple[str, ...]
    source: str
    skipped: tuple[str, ...] = ()


# ---- npz -----------------------------------------------------------------------------------


def load_npz(path: Path) -> Loaded:
    try:
        with np.load(path, allow_pickle=False) as z:  # allow_pickle=False: npz never runs code
            arrays = {k: z[k] for k in z.files}
    except Exception as err:
        raise DataError(f"cannot read {path} as .npz: {err}") from err
    if "images" not in arrays:
        raise DataError(f"{path}: no 'images' array (found: {sorted(arrays)})")
    images = arrays["images"]
    if images.dtype != np.uint8:
        raise DataError(
            f"{path}: 'images' must be uint8, got {images.dtype}; for floats in [0, 1] save "
            "(x * 255).round().astype(np.uint8)"
        )
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) grey
    if images.ndim != 4 or images.shape[3] not in (1, 2, 3, 4) or images.shape[0] == 0:
        raise DataError(
            f"{path}: 'images' has shape {images.shape}; expected N x H x W x C (channels last, "
            "C in 1..4, N >= 1) or N x H x W; transpose channels-first data before saving"
        )
    n = images.shape[0]
    labels = arrays.get("labels")
    if labels is not None and (labels.dtype.kind not in "iu" or labels.shape != (n,)):
        raise DataError(
            f"{path}: 'labels' must be integers of shape ({n},), got {labels.dtype} {labels.shape}"
        )
    names_arr = arrays.get("class_names")
    class_names = None if names_arr is None else tuple(str(s) for s in names_arr.reshape(-1))
    names = tuple(f"{path.name}[{i}]" for i in range(n))
    return Loaded(list(images), labels, class_names, names, f"npz file {path}")


# ---- CIFAR-10/100 python batches -----------------------------------------------------------


def _safe_latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles at protocol <= 2 store bytes as _codecs.encode(str, "latin1"): only that.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise DataError(f"pickle asks for _codecs.encode with encoding {encoding!r}; refused")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any] | type]:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _safe_latin1_encode,
    }
    for pkg in ("numpy.core", "numpy._core"):  # files name whichever numpy wrote them
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar
        # Protocol-5 pickles of arrays call numeric._frombuffer (absent from numpy's stubs).
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals that CIFAR batches contain; anything else is refused."""

    def __init__(self, file: IO[bytes], path: Path) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 str -> bytes, as the files expect
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise DataError(f"{self._path}: refused to load {module}.{name} (not a CIFAR batch?)")
        return found


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            obj = _RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: corrupt or not a CIFAR python batch ({err})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def find_cifar(root: Path) -> tuple[Path, str] | None:
    for d in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if (d / "data_batch_1").is_file() or (d / "test_batch").is_file():
            return d, "CIFAR-10"
        if (d / "meta").is_file() and ((d / "train").is_file() or (d / "test").is_file()):
            return d, "CIFAR-100"
    return None


def load_cifar(found: tuple[Path, str], split: str) -> Loaded:
    d, kind = found
    if kind == "CIFAR-10":
        pattern = re.compile(r"data_batch_(\d+)") if split == "train" else re.compile("test_batch")
        files = sorted(
            (p for p in d.iterdir() if pattern.fullmatch(p.name) and p.is_file()),
            key=lambda p: int(p.name.rsplit("_", 1)[1]) if split == "train" else 0,
        )
        meta_file, names_key, labels_key = d / "batches.meta", "label_names", "labels"
    else:
        files = [d / split] if (d / split).is_file() else []
        meta_file, names_key, labels_key = d / "meta", "fine_label_names", "fine_labels"
    if not files:
        raise DataError(f"{d}: no {split} split of {kind} (found: {sorted(os.listdir(d))})")
    chunks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    names: list[str] = []
    for f in files:
        batch = _unpickle(f)
        data, lab = batch.get("data"), batch.get(labels_key, batch.get("labels"))
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3072,):
            raise DataError(f"{f}: 'data' must be a uint8 array of shape (N, 3072)")
        lab_arr = np.asarray(lab if lab is not None else [])
        if lab_arr.shape != (data.shape[0],) or lab_arr.dtype.kind not in "iu":
            raise DataError(f"{f}: '{labels_key}' must hold {data.shape[0]} integer labels")
        chunks.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # CHW rows -> HWC
        labels.append(lab_arr.astype(np.int64))
        names.extend(f"{f.name}[{i}]" for i in range(data.shape[0]))
    pixels = np.ascontiguousarray(np.concatenate(chunks))  # (N, 32, 32, 3)
    all_labels = np.concatenate(labels)
    class_names = None
    if meta_file.is_file():
        raw = _unpickle(meta_file).get(names_key)
        if raw is not None:
            class_names = tuple(s.decode() if isinstance(s, bytes) else str(s) for s in raw)
            if len(class_names) <= int(all_labels.max(initial=0)):
                raise DataError(f"{meta_file}: {len(class_names)} class names for the labels used")
    source = f"{kind} python batches in {d} ({split} split: {', '.join(f.name for f in files)})"
    return Loaded(list(pixels), all_labels, class_names, tuple(names), source)


# ---- MNIST IDX -----------------------------------------------------------------------------

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_exact(f: IO[bytes], count: int, path: Path) -> bytes:
    # Read in 1 MiB steps so a header that claims a huge size cannot make us allocate it up front.
    parts, left = [], count
    while left > 0:
        part = f.read(min(left, 1 << 20))
        if not part:
            raise DataError(f"{path}: truncated IDX file ({count - left} of {count} bytes)")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (big-endian header: 0, 0, dtype code, ndim, then ndim uint32 sizes)."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as opened:
            f = cast(IO[bytes], opened)
            zero, code, ndim = struct.unpack(">HBB", _read_exact(f, 4, path))
            if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
                raise DataError(f"{path}: not an IDX file (bad magic {zero:#x} {code:#x} {ndim})")
            dims = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path))
            dtype = np.dtype(_IDX_DTYPES[code])
            body_size = math.prod(dims) * dtype.itemsize
            if path.suffix != ".gz" and path.stat().st_size != 4 + 4 * ndim + body_size:
                raise DataError(
                    f"{path}: header says {dims} ({body_size} bytes of data) but the file has "
                    f"{path.stat().st_size - 4 - 4 * ndim}; truncated or corrupt"
                )
            body = _read_exact(f, body_size, path)
            if f.read(1):
                raise DataError(f"{path}: data continues past the size its header declares {dims}")
    except DataError:
        raise
    except (OSError, EOFError, struct.error) as err:
        raise DataError(f"{path}: cannot read IDX file ({err})") from err
    return np.frombuffer(body, dtype).reshape(dims)


def find_mnist(root: Path, split: str) -> tuple[Path, Path | None, str] | None:
    prefix = "train" if split == "train" else "t10k"
    dirs = (root, root / "raw", root / "MNIST" / "raw")

    def find(stem: str, kind: str) -> Path | None:
        # Both spellings occur: "train-images-idx3-ubyte" and "train-images.idx3-ubyte".
        for d, sep, ext in itertools.product(dirs, "-.", ("", ".gz")):
            p = d / f"{prefix}-{stem}{sep}{kind}-ubyte{ext}"
            if p.is_file():
                return p
        return None

    images = find("images", "idx3")
    if images is None:
        other = "t10k" if split == "train" else "train"
        if any(d.is_dir() and any(d.glob(f"{other}-images*")) for d in dirs):
            raise DataError(f"{root}: MNIST files found but no {split} split ({prefix}-images-...)")
        return None
    return images, find("labels", "idx1"), split


def load_mnist(images_path: Path, labels_path: Path | None, split: str) -> Loaded:
    pixels = _read_idx(images_path)
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise DataError(f"{images_path}: expected uint8 images (N, H, W), got {pixels.dtype} {pixels.shape}")
    labels, class_names = None, None
    if labels_path is not None:
        raw = _read_idx(labels_path)
        if raw.ndim != 1 or raw.shape[0] != pixels.shape[0] or raw.dtype.kind not in "iu":
            raise DataError(f"{labels_path}: {raw.shape} labels for {pixels.shape[0]} images")
        labels = raw.astype(np.int64)
        class_names = tuple(str(k) for k in range(int(labels.max(initial=0)) + 1))
    stem = images_path.name.split(".")[0].replace("-idx3-ubyte", "")
    names = tuple(f"{stem}[{i}]" for i in range(pixels.shape[0]))
    source = f"MNIST IDX files {images_path} ({split} split)"
    return Loaded(list(pixels[..., None]), labels, class_names, names, source)
