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
The readers of the array formats (2-4) are in `vqkit.data.archives`.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from vqkit.data.archives import Loaded, find_cifar, find_mnist, load_cifar, load_mnist, load_npz
from vqkit.data.builtin import load_builtin
from vqkit.data.errors import DataError
from vqkit.data.imageset import ImageSet

__all__ = ["IMAGE_EXTENSIONS", "DataError", "ImageSet", "load_dataset", "read_image", "split_holdout"]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)

# One rule for every command (train, eval, compress, ...): an image whose shorter side is below
# MIN_IMAGE_SIDE pixels is refused (skipped and named inside a data set, an error on its own).
# Such an image is less than one code cell at the default downsampling factor 4, and SSIM's
# smallest window (3x3, with a sample covariance over its pixels) does not fit a side of 1 or 2.
# Anything larger is accepted: the model pads it to its grid and crops the result back.
MIN_IMAGE_SIDE = 4

# Pixels per image above which a file is refused from its header, before it is decoded: a few KB
# of PNG can hold a 12000x12000 image (1.9 GB once decoded in memory). 64 megapixels keeps every
# current camera photo (a 48 MP RGB image is 144 MB decoded) and bounds one image's memory at
# 192 MB (RGB, uint8). `--max-image-pixels` raises it. PIL's own decompression-bomb guard stays
# behind ours (it refuses above twice its limit, which is raised when ours goes above it).
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
_PIL_DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 0
_max_pixels = DEFAULT_MAX_IMAGE_PIXELS


def max_image_pixels() -> int:
    """The current per-image pixel limit (see DEFAULT_MAX_IMAGE_PIXELS)."""
    return _max_pixels


def set_max_image_pixels(limit: int) -> None:
    """Set the per-image pixel limit for every later read (the CLI's --max-image-pixels)."""
    global _max_pixels
    if limit < MIN_IMAGE_SIDE**2:
        raise DataError(f"the image pixel limit must be at least {MIN_IMAGE_SIDE**2}, got {limit}")
    _max_pixels = int(limit)
    if Image.MAX_IMAGE_PIXELS is not None and _max_pixels > _PIL_DEFAULT_MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = _max_pixels  # else PIL would still refuse what the user allowed


def check_image_size(name: str, h: int, w: int) -> None:
    """DataError for an image outside the size rules above (tiny, or above the pixel limit)."""
    if min(h, w) < MIN_IMAGE_SIDE:
        raise DataError(
            f"{name}: image is {w}x{h}; vqkit needs at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels"
        )
    if h * w > _max_pixels:
        raise DataError(
            f"{name}: image is {w}x{h} ({h * w / 1e6:.1f} megapixels), above the limit of "
            f"{_max_pixels / 1e6:g} megapixels; raise it with --max-image-pixels if you trust the file"
        )


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode one image file to (H, W, C) uint8, keeping its mode's channels.

    L -> 1, LA -> 2, RGB -> 3, RGBA -> 4 (palette images become RGB, or RGBA when they carry
    transparency; CMYK/YCbCr/LAB/HSV become RGB; 16-bit grey is scaled to 8 bits). The EXIF
    orientation is applied, and a multi-frame file (GIF, TIFF) gives its first frame.
    """
    try:
        with Image.open(path) as opened:
            img: Image.Image = opened
            check_image_size(os.fspath(path), opened.height, opened.width)  # from the header alone
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
    except Image.DecompressionBombError as err:  # more than twice the limit: PIL's own refusal
        raise DataError(f"{path}: {err}; raise the limit with --max-image-pixels") from err
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
        base = load_builtin()
        loaded = Loaded(base.images, base.labels, base.class_names, base.names, base.source)
    else:
        path, split = Path(text), None
        for name in ("train", "test"):
            if text.endswith(":" + name) and not path.exists():
                path, split = Path(text[: -len(name) - 1]), name
        loaded = _load_path(path, split, max_images, progress)
    return _finish(loaded, channels, max_images)


def _load_path(path: Path, split: str | None, max_images: int | None, progress: bool) -> Loaded:
    if not path.exists():
        raise DataError(f"dataset path not found: {path}")
    if path.is_dir():
        cifar = find_cifar(path)
        if cifar is not None:
            return load_cifar(cifar, split or "train")
        mnist = find_mnist(path, split or "train")
        if mnist is not None:
            return load_mnist(*mnist)
    if split is not None:
        raise DataError(f"':{split}' selects a CIFAR or MNIST split, but {path} is neither")
    if path.is_dir():
        return _load_folder(path, max_images, progress)
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    return Loaded([read_image(path)], None, None, (path.name,), str(path))


def _finish(loaded: Loaded, channels: int | None, max_images: int | None) -> ImageSet:
    images, labels, names = loaded.images, loaded.labels, loaded.names
    if max_images is not None and len(images) > max_images:
        images, names = images[:max_images], names[:max_images]
        labels = None if labels is None else labels[:max_images]
    # Arrays from CIFAR/MNIST/npz (and anything else that skipped read_image) meet the same rule.
    keep, refused = [], []
    for i, (img, name) in enumerate(zip(images, names, strict=True)):
        try:
            check_image_size(name, img.shape[0], img.shape[1])
            keep.append(i)
        except DataError as err:
            refused.append((name, str(err)))
    skipped = loaded.skipped
    if refused:
        if not keep:
            raise DataError(f"{loaded.source}: no usable image ({refused[0][1]})")
        listed = ", ".join(n for n, _ in refused[:5]) + (" ..." if len(refused) > 5 else "")
        warnings.warn(
            f"skipped {len(refused)} of {len(images)} images in {loaded.source}: {listed} ({refused[0][1]})",
            stacklevel=3,
        )
        images, names = [images[i] for i in keep], tuple(names[i] for i in keep)
        labels = None if labels is None else np.asarray(labels)[keep]
        skipped = (*skipped, *(n for n, _ in refused))
    if channels is None:
        channels = 1 if all(img.shape[2] <= 2 for img in images) else 3
    return ImageSet(
        images=[_convert_channels(img, channels) for img in images],
        labels=None if labels is None else np.asarray(labels, dtype=np.int64),
        class_names=loaded.class_names,
        channels=channels,
        source=loaded.source,
        names=tuple(names),
        skipped=skipped,
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


def _load_folder(root: Path, max_images: int | None, progress: bool) -> Loaded:
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
    return Loaded(images, labels, class_names, names, f"image folder {root}", skipped)
