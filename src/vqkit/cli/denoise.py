"""vqkit denoise: clean estimates of noisy images from a run trained corrupted -> clean.

    vqkit denoise RUN INPUT... -o OUT

INPUT: image files, folders or data specs; any image size. OUT: a folder receiving one PNG per image
under the image's own name (folder structure kept, extension .png), or, for a single input image, a
file path ending in .png.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np

from vqkit.cli.common import add_device, parser
from vqkit.data import IMAGE_EXTENSIONS, DataError, load_dataset
from vqkit.runs import Run
from vqkit.tasks.denoise import MAX_PIXELS, denoise_images
from vqkit.visual import save_png


def output_relpath(name: str) -> Path:
    """An image's dataset name -> a safe relative PNG path: sub-folders kept, odd characters
    replaced, the image extension swapped for .png (``cat/001.webp`` -> ``cat/001.png``)."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", p).strip("_") or "image" for p in parts] or ["image"]
    stem = safe[-1]
    suffix = PurePosixPath(stem).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        stem = stem[: -len(suffix)]
    return Path(*safe[:-1], f"{stem}.png")


def main(argv: list[str]) -> int:
    p = parser("denoise", "Denoise images with a run trained on corrupted inputs (data.corruption).")
    p.add_argument("run", type=Path)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or data specs")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output folder, or a .png file for a single input image",
    )
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="pixels per inference batch")
    add_device(p)
    a = p.parse_args(argv)
    run = Run.load(a.run, a.device, a.precision)
    if run.config.data.corruption is None:
        print(
            f"vqkit denoise: note: {a.run} was trained without data.corruption; its output is a "
            "plain reconstruction, not a trained denoiser",
            file=sys.stderr,
        )
    images: list[np.ndarray] = []
    names: list[str] = []
    for spec in a.inputs:
        data = load_dataset(spec, channels=run.channels)
        images += data.images
        names += data.names
    single_file = a.output.suffix.lower() == ".png"
    if single_file and len(images) != 1:
        raise DataError(
            f"-o {a.output} names one file, but the inputs hold {len(images)} images; give a folder instead"
        )
    targets = [a.output] if single_file else [a.output / output_relpath(n) for n in names]
    dup = next((t for t, n in Counter(targets).items() if n > 1), None)
    if dup is not None:
        raise DataError(f"two input images would both be written to {dup}; denoise them separately")
    for target, clean in zip(targets, denoise_images(run, images, a.max_pixels), strict=True):
        save_png(clean, target)
    where = a.output if single_file else f"{a.output}/"
    print(f"denoised {len(images)} image{'s' if len(images) != 1 else ''} into {where}")
    return 0
