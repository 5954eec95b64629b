"""Datasets: one in-memory container (`ImageSet`) and a loader that detects the format by content.

`load_dataset(spec)` accepts, in this order of detection:
  1. the word ``builtin``: the embedded default (see `vqkit.data.builtin`);
  2. a directory holding CIFAR-10/100 "python version" batches (optionally in `cifar-10-batches-py/`
     or `cifar-100-python/`), read with a restricted unpickler;
  3. a directory holding MNIST IDX files (raw or `.gz`, optionally in `raw/` or `MNIST/raw/`);
  4. an `.npz` file with `images` (uint8, N x H x W [x C]) and optional `labels`, `class_names`;
  5. a single image file;
  6. any other directory: images found recursively; first-level subfolders become classes when every
     image sits inside one.
CIFAR and MNIST load their training split by default; append ``:test`` (or ``:train``) to the
path to choose. Everything is decoded to uint8 (H, W, C) arrays; channels are 1 or 3 after loading.
"""

from __future__ import annotations

import gzip
import itertools
import math
import os
import pickle
import re
import struct
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)


class DataError(ValueError):
    """A user-facing data problem; the message says what is wrong and where."""


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no useful ==, so identity semantics
class ImageSet:
    """Decoded images in memory, each (H, W, C) uint8 with C == `channels`; sizes may differ."""

    images: list[np.ndarray]
    labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    channels: int
    source: str
    names: tuple[str, ...]
    skipped: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise DataError(f"ImageSet channels must be 1 or 3, got {self.channels}")
        if len(self.names) != len(self.images):
            raise DataError(f"{len(self.names)} names for {len(self.images)} images")
        for name, img in zip(self.names, self.images, strict=True):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != self.channels:
                raise DataError(
                    f"image {name!r} is {img.dtype} {img.shape}; expected uint8 (H, W, {self.channels})"
                )
        if self.labels is not None and (
            self.labels.dtype != np.int64 or self.labels.shape != (len(self.images),)
        ):
            raise DataError(
                f"labels must be int64 of shape ({len(self.images)},), got "
                f"{self.labels.dtype} {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def uniform_size(self) -> tuple[int, int] | None:
        """(H, W) when every image has that size; None for mixed sizes or an empty set."""
        sizes = {img.shape[:2] for img in self.images}
        if len(sizes) != 1:
            return None
        h, w = sizes.pop()
        return int(h), int(w)

    def as_array(self) -> np.ndarray:
        """(N, H, W, C) uint8 copy; an empty set gives (0, 0, 0, C)."""
        if not self.images:
            return np.empty((0, 0, 0, self.channels), np.uint8)
        if self.uniform_size is None:
            sizes = sorted({img.shape[:2] for img in self.images})
            raise DataError(
                f"{self.source}: images differ in size ({len(sizes)} sizes, e.g. "
                f"{sizes[:3]}); use .patches(size) to cut equal crops"
            )
        return np.stack(self.images)

    def subset(self, idx: np.ndarray | list[int]) -> ImageSet:
        """A new ImageSet with the images at integer positions `idx`, in that order."""
        index = np.asarray(idx, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise DataError(f"subset index out of range for {len(self)} images")
        return ImageSet(
            images=[self.images[i] for i in index],
            labels=None if self.labels is None else self.labels[index],
            class_names=self.class_names,
            channels=self.channels,
            source=self.source,
            names=tuple(self.names[i] for i in index),
            skipped=self.skipped,
        )

    def patches(self, size: int, per_image: int | None = None, seed: int = 0) -> np.ndarray:
        """(M, size, size, C) uint8 crops, deterministic for a given `seed`.

        An image of exactly size x size is taken once as-is; one smaller in either side is skipped.
        `per_image=None` tiles each image with non-overlapping crops on a grid centred in the image
        (leftover margins split evenly); an integer draws that many uniform random positions.
        """
        if size < 1 or (per_image is not None and per_image < 1):
            raise DataError(f"patches needs size >= 1 and per_image >= 1 (got {size}, {per_image})")
        rng = np.random.default_rng(seed)
        crops: list[np.ndarray] = []
        for img in self.images:
            h, w = img.shape[:2]
            if h < size or w < size:
                continue
            if h == size and w == size:
                crops.append(img)
                continue
            if per_image is None:
                rows, cols = h // size, w // size
                y0, x0 = (h - rows * size) // 2, (w - cols * size) // 2
                ys = np.repeat(y0 + size * np.arange(rows), cols)
                xs = np.tile(x0 + size * np.arange(cols), rows)
            else:
                ys = rng.integers(0, h - size + 1, per_image)
                xs = rng.integers(0, w - size + 1, per_image)
            crops.extend(img[y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True))
        if not crops:
            raise DataError(f"{self.source}: no image is at least {size}x{size}")
        return np.stack(crops)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode one image file to (H, W, C) uint8, keeping its mode's channels.

    L -> 1, LA -> 2, RGB -> 3, RGBA -> 4 (palette images become RGB, or RGBA when they carry
    transparency; CMYK/YCbCr/LAB/HSV become RGB; 16-bit grey is scaled to 8 bits). The EXIF
    orientation is applied, and a multi-frame file (GIF, TIFF) gives its first frame.
    """
    try:
        with Image.open(path) as opened:
            img: Image.Image = opened
            if opened.getexif().get(0x0112, 1) != 1:  # 0x0112: EXIF Orientation
                img = ImageOps.exif_transpose(opened)
            img.load()
            mode = img.mode
            if mode.startswith("I;16"):
                wide = np.asarray(img).astype(np.uint32)
                arr = ((wide * 255 + 32767) // 65535).astype(np.uint8)  # 16 -> 8 bits, rounded
            elif mode in ("L", "LA", "RGB", "RGBA"):
                arr = np.asarray(img)
            elif mode in ("1", "La", "RGBa", "PA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P"):
                alpha = mode in ("La", "RGBa", "PA") or "transparency" in img.info
                grey = mode in ("1", "La")
                arr = np.asarray(
                    img.convert(("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB"))
                )
            else:
                raise DataError(f"{path}: unsupported image mode {mode!r} (use 8/16-bit L or RGB)")
    except DataError:
        raise
    except Exception as err:  # any decoder failure on untrusted bytes is a data problem
        raise DataError(f"cannot decode image {path}: {err}") from err
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _convert_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, C) with C in 1..4 -> (H, W, channels); alpha is dropped, not composited."""
    if img.shape[2] in (2, 4):
        img = img[:, :, :-1]
    if img.shape[2] == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=2)
    # ITU-R BT.601 luma, 0.299 R + 0.587 G + 0.114 B, rounded half up in integer arithmetic.
    rgb = img.astype(np.uint32)
    luma = (299 * rgb[:, :, 0] + 587 * rgb[:, :, 1] + 114 * rgb[:, :, 2] + 500) // 1000
    return luma.astype(np.uint8)[:, :, None]


def split_holdout(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted int64 (train_idx, holdout_idx) covering range(n); holdout ~ n * fraction.

    The holdout never takes every item: with n >= 1 at least one index stays in train.
    """
    if n < 0 or not 0.0 <= fraction < 1.0:
        raise DataError(f"split_holdout needs n >= 0 and 0 <= fraction < 1 (got {n}, {fraction})")
    n_hold = min(round(n * fraction), max(n - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_hold:]).astype(np.int64), np.sort(perm[:n_hold]).astype(np.int64)


class _Loaded(NamedTuple):
    images: list[np.ndarray]  # (H, W, C) uint8, C in 1..4 before channel resolution
    labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    names: tuple[str, ...]
    source: str
    skipped: tuple[str, ...] = ()


def load_dataset(
    spec: str | os.PathLike[str],
    *,
    channels: int | None = None,
    max_images: int | None = None,
    progress: bool = False,
) -> ImageSet:
    """Load a dataset (format detected by content, see the module docstring) into an ImageSet.

    channels: None infers 1 when every image is grey (L/LA), else 3; 1 or 3 converts (grey is
    replicated, RGB -> grey uses BT.601 luma, alpha is dropped). max_images keeps the first N in
    the format's order (sorted paths for folders, file order for CIFAR/MNIST/npz).
    """
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1, 3 or None, got {channels}")
    if max_images is not None and max_images < 1:
        raise DataError(f"max_images must be >= 1, got {max_images}")
    text = os.fspath(spec)
    if text.strip() == "builtin":
        from vqkit.data.builtin import load_builtin  # lazy: builtin.py imports this module

        base = load_builtin()
        loaded = _Loaded(base.images, base.labels, base.class_names, base.names, base.source)
    else:
        path, split = Path(text), None
        for name in ("train", "test"):
            if text.endswith(":" + name) and not path.exists():
                path, split = Path(text[: -len(name) - 1]), name
        loaded = _load_path(path, split, max_images, progress)
    return _finish(loaded, channels, max_images)


def _load_path(path: Path, split: str | None, max_images: int | None, progress: bool) -> _Loaded:
    if not path.exists():
        raise DataError(f"dataset path not found: {path}")
    if path.is_dir():
        cifar = _find_cifar(path)
        if cifar is not None:
            return _load_cifar(cifar, split or "train")
        mnist = _find_mnist(path, split or "train")
        if mnist is not None:
            return _load_mnist(*mnist)
    if split is not None:
        raise DataError(f"':{split}' selects a CIFAR or MNIST split, but {path} is neither")
    if path.is_dir():
        return _load_folder(path, max_images, progress)
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    return _Loaded([read_image(path)], None, None, (path.name,), str(path))


def _finish(loaded: _Loaded, channels: int | None, max_images: int | None) -> ImageSet:
    images, labels, names = loaded.images, loaded.labels, loaded.names
    if max_images is not None and len(images) > max_images:
        images, names = images[:max_images], names[:max_images]
        labels = None if labels is None else labels[:max_images]
    if channels is None:
        channels = 1 if all(img.shape[2] <= 2 for img in images) else 3
    return ImageSet(
        images=[_convert_channels(img, channels) for img in images],
        labels=None if labels is None else np.asarray(labels, dtype=np.int64),
        class_names=loaded.class_names,
        channels=channels,
        source=loaded.source,
        names=tuple(names),
        skipped=loaded.skipped,
    )


# ---- folders of image files ----------------------------------------------------------------


def _decode_chunk(paths: list[Path]) -> list[np.ndarray | str]:
    """Decode a chunk of files; a failure becomes its error message instead of raising."""
    out: list[np.ndarray | str] = []
    for p in paths:
        try:
            out.append(read_image(p))
        except DataError as err:
            out.append(str(err))
    return out


def _load_folder(root: Path, max_images: int | None, progress: bool) -> _Loaded:
    rel: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # e.g. .git, .ipynb_checkpoints
        base = Path(dirpath).relative_to(root)
        rel.extend(
            (base / f).as_posix()
            for f in filenames
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        )
    rel.sort()
    if max_images is not None:
        rel = rel[:max_images]
    if not rel:
        raise DataError(f"no images found in {root} (extensions: {sorted(IMAGE_EXTENSIONS)})")
    # Chunks of 256 files per task keep executor overhead small for folders of tiny images;
    # PIL releases the GIL while decoding, so threads overlap the decode work.
    chunks = [[root / r for r in rel[i : i + 256]] for i in range(0, len(rel), 256)]
    results: list[np.ndarray | str] = []
    workers = min(16, os.cpu_count() or 1)
    with (
        tqdm(total=len(rel), desc=f"decoding {root.name}", unit="img", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        for chunk_result in pool.map(_decode_chunk, chunks):
            results.extend(chunk_result)
            bar.update(len(chunk_result))
    ok = [i for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    skipped = tuple(rel[i] for i, r in enumerate(results) if isinstance(r, str))
    if not ok:
        raise DataError(
            f"no images found in {root}: all {len(rel)} image files failed to decode "
            f"(first error: {results[0]})"
        )
    if skipped:
        first = next(r for r in results if isinstance(r, str))
        warnings.warn(
            f"skipped {len(skipped)} of {len(rel)} files in {root} that could not be decoded: "
            f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''} ({first})",
            stacklevel=4,
        )
    names = tuple(rel[i] for i in ok)
    labels, class_names = None, None
    if all("/" in n for n in names):  # every image inside a first-level subfolder: class layout
        class_names = tuple(sorted({n.split("/", 1)[0] for n in names}))
        lookup = {c: k for k, c in enumerate(class_names)}
        labels = np.array([lookup[n.split("/", 1)[0]] for n in names], dtype=np.int64)
    images = [r for r in results if isinstance(r, np.ndarray)]
    return _Loaded(images, labels, class_names, names, f"image folder {root}", skipped)


# ---- npz -----------------------------------------------------------------------------------


def _load_npz(path: Path) -> _Loaded:
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
    return _Loaded(list(images), labels, class_names, names, f"npz file {path}")


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


def _find_cifar(root: Path) -> tuple[Path, str] | None:
    for d in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if (d / "data_batch_1").is_file() or (d / "test_batch").is_file():
            return d, "CIFAR-10"
        if (d / "meta").is_file() and ((d / "train").is_file() or (d / "test").is_file()):
            return d, "CIFAR-100"
    return None


def _load_cifar(found: tuple[Path, str], split: str) -> _Loaded:
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
    return _Loaded(list(pixels), all_labels, class_names, tuple(names), source)


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


def _find_mnist(root: Path, split: str) -> tuple[Path, Path | None, str] | None:
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


def _load_mnist(images_path: Path, labels_path: Path | None, split: str) -> _Loaded:
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
    return _Loaded(list(pixels[..., None]), labels, class_names, names, source)
