"""vqkit denoise: clean estimates of noisy images from a run trained corrupted -> clean.

    vqkit denoise RUN INPUT... -o OUT
    vqkit denoise RUN --eval DATA [--sigma 15,25,50] [--json PATH]

INPUT: image files, folders or data specs; any image size. OUT: a folder receiving one PNG per image
under the image's own name (folder structure kept, extension .png), or, for a single input image, a
file path ending in .png.

With --eval the run is measured instead: each clean image of DATA gets seeded Gaussian noise of each
sigma (0-255 scale, clamped and rounded to 8 bits), the run denoises it, and PSNR / SSIM of the noisy
and of the denoised images against the clean ones go to RUN/denoise.json (a "denoise" result for
``vqkit report``) with RUN/denoise_examples.png (clean, noisy, denoised rows).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np

from vqkit.cli.common import add_device, add_run, parser
from vqkit.data import IMAGE_EXTENSIONS, DataError, load_dataset
from vqkit.runs import Run, layout, shipped
from vqkit.runs.results import write_result, write_result_file
from vqkit.tasks.denoise import MAX_PIXELS, denoise_images, evaluate_denoising, save_examples
from vqkit.visual import save_png

EXAMPLE_SIGMA = 25.0  # the examples picture's noise level when it is among --sigma (else the first)


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


def _sigmas(text: str) -> list[float]:
    try:
        sigmas = [float(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise DataError(f"--sigma takes comma-separated numbers such as 15,25,50, got {text!r}") from e
    if not sigmas or any(not 0 < s <= 255 for s in sigmas):
        raise DataError(f"--sigma values must lie in (0, 255], got {text!r}")
    return sigmas


def main(argv: list[str]) -> int:
    p = parser(
        "denoise",
        "Denoise images with a run trained on corrupted inputs (data.corruption), or measure how well "
        "it denoises (--eval).",
    )
    add_run(p)
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or data specs")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output folder, or a .png file for a single input image (default for one image file: "
        "STEM-denoised.png in the working directory)",
    )
    p.add_argument(
        "--eval",
        metavar="DATA",
        help="measure instead: add noise to DATA's clean images, denoise, write RUN/denoise.json",
    )
    p.add_argument(
        "--sigma",
        default="15,25,50",
        help="with --eval: Gaussian noise levels, 0-255 scale, comma-separated (default 15,25,50)",
    )
    p.add_argument("--json", type=Path, help="with --eval: also write the results here")
    p.add_argument("--max-images", type=int, help="with --eval: use at most the first N images")
    p.add_argument("--seed", type=int, default=0, help="with --eval: seed of the noise (default 0)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="pixels per inference batch")
    add_device(p)
    a = p.parse_args(argv)
    if a.eval is not None:
        if a.inputs or a.output:
            p.error("--eval measures the run on DATA; give no INPUT or -o with it")
    else:
        if not a.inputs:
            p.error("give INPUT images (and -o OUTPUT), or --eval DATA to measure the run")
        if a.output is None:
            # One image file: STEM-denoised.png in the working directory, as tools of this kind do.
            if len(a.inputs) != 1 or not Path(a.inputs[0]).is_file():
                p.error("give -o OUTPUT (a folder) for several images or a folder of them")
            a.output = Path(Path(a.inputs[0]).stem + "-denoised.png")
        if a.json or a.max_images is not None:
            p.error("--json and --max-images go with --eval")
    if a.max_images is not None and a.max_images < 1:
        p.error("--max-images must be >= 1")
    sigmas = _sigmas(a.sigma) if a.eval is not None else []
    run = Run.load(a.run, a.device, a.precision)
    if run.config.data.corruption is None:
        print(
            f"vqkit denoise: note: {a.run} was trained without data.corruption; its output is a "
            "plain reconstruction, not a trained denoiser",
            file=sys.stderr,
        )
    if a.eval is not None:
        return _evaluate(run, a.eval, sigmas, a)
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


def _evaluate(run: Run, spec: str, sigmas: list[float], a: argparse.Namespace) -> int:
    clean = load_dataset(spec, channels=run.channels, max_images=a.max_images).images
    result = evaluate_denoising(run, clean, sigmas, seed=a.seed, max_pixels=a.max_pixels)
    example_sigma = EXAMPLE_SIGMA if EXAMPLE_SIGMA in sigmas else sigmas[0]
    data = {
        "run": str(a.run),
        "data": spec,
        "trained_corruption": run.config.data.corruption,
        "examples_sigma": example_sigma,
        **result,
    }
    path = write_result(run.path, layout.DENOISE_FILE, "denoise", data)
    if a.json:
        write_result_file(a.json, "denoise", data)
    examples = shipped.output_path(run.path, layout.DENOISE_EXAMPLES)
    save_examples(run, clean, example_sigma, examples, seed=a.seed)
    print(f"{'sigma':>6}  {'noisy PSNR / SSIM':>18}  {'denoised PSNR / SSIM':>21}")
    for r in result["results"]:
        noisy, out = r["noisy"], r["denoised"]
        print(
            f"{r['sigma']:>6g}  {noisy['psnr']:>9.2f} / {noisy['ssim']:.4f}  "
            f"{out['psnr']:>12.2f} / {out['ssim']:.4f}"
        )
    print(f"{len(clean)} images of {spec}; wrote {path} and {examples}")
    return 0
