"""Images in and out of the codec on disk: inputs in their original modes, PNG outputs, .vqk files."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vqkit.codec.container import CodecError
from vqkit.data import IMAGE_EXTENSIONS, DataError, load_dataset, read_image
from vqkit.runs import atomic_write

MAX_FILE_BYTES = 1 << 30  # a .vqk larger than this is refused before reading it


def _image_files(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            Path(dirpath) / f
            for f in filenames
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        )
    return sorted(found)


def read_inputs(
    specs: Sequence[str], max_images: int | None = None, *, strict: bool = False
) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Image files, folders of image files (recursively, sorted) or any data spec -> (images, names,
    problems).

    Image files keep their mode (L, LA, RGB, RGBA). A file that cannot be read (corrupt, too small,
    above the pixel limit) is skipped and its error message is returned in ``problems``, as training
    skips and names such files; with ``strict`` the first one raises instead. Inputs that yield no
    image at all are an error either way. Other specs (CIFAR/MNIST folders, .npz, ``builtin``) load
    through ``vqkit.data.load_dataset``.
    """
    images: list[np.ndarray] = []
    names: list[str] = []
    problems: list[str] = []
    for spec in specs:
        path = Path(spec)
        files = [path] if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS else []
        if path.is_dir():
            files = _image_files(path)
        if files:
            for f in files:
                if max_images is not None and len(images) >= max_images:
                    break
                try:
                    images.append(read_image(f))
                except DataError as err:
                    if strict:
                        raise
                    problems.append(str(err))
                    continue
                names.append(f.relative_to(path).as_posix() if path.is_dir() else f.name)
        else:
            left = None if max_images is None else max_images - len(images)
            if left is not None and left <= 0:
                break
            data = load_dataset(spec, max_images=left)
            images.extend(data.images)
            names.extend(data.names)
    if not images:
        first = f" ({problems[0]})" if problems else ""
        raise DataError(f"no usable images in {', '.join(specs) or 'the inputs'}{first}")
    return images, names, problems


def output_stems(names: Sequence[str]) -> list[str]:
    """Safe, unique file stems for image names (folders flattened with '_', duplicates numbered)."""
    stems: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", name)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
        if stem in seen:
            stem = f"{stem}_{i:05d}"
        seen.add(stem)
        stems.append(stem)
    return stems


def write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    atomic_write(path, write)


def read_vqk(path: Path) -> bytes:
    if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
        raise CodecError(f"{path} is larger than {MAX_FILE_BYTES} bytes; not a .vqk file vqkit wrote")
    return path.read_bytes()


def write_png(path: Path, image: np.ndarray) -> None:
    """(H, W, C) uint8 with C in 1..4 -> PNG in mode L, LA, RGB or RGBA."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"write_png needs (H, W, 1..4) uint8, got {image.dtype} {image.shape}")
    pil = Image.fromarray(np.ascontiguousarray(image[:, :, 0] if image.shape[2] == 1 else image))
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))
