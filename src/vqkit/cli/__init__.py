"""The ``vqkit`` command line. Each subcommand is a module with ``main(argv) -> int``."""

from __future__ import annotations

import importlib
import sys

from vqkit.cli.common import run_safely
from vqkit.data import DataError
from vqkit.data.datasets import DEFAULT_MAX_IMAGE_PIXELS, set_max_image_pixels

# subcommand -> (module, function `(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "models": (
        "vqkit.cli.models",
        "main",
        "the models shipped with vqkit: list them, print a card, copy one",
    ),
    "train": ("vqkit.cli.train", "main", "train a VQ-VAE into a run folder (resumable)"),
    "eval": ("vqkit.cli.evaluate", "main", "evaluate a run on a data set: PSNR, SSIM, codebook health"),
    "reconstruct": ("vqkit.cli.reconstruct", "main", "picture of images beside their reconstructions"),
    "encode": ("vqkit.cli.codes", "encode_main", "encode a data set to index grids (.npz)"),
    "decode": ("vqkit.cli.codes", "decode_main", "decode index grids (.npz) to PNG images"),
    "compress": ("vqkit.cli.compress", "compress_main", "compress images into .vqk files"),
    "decompress": ("vqkit.cli.compress", "decompress_main", "decompress .vqk files to PNG images"),
    "rd": ("vqkit.cli.rd", "main", "rate-distortion of the run's codec on a data set (RUN/rd.json)"),
    "prior": (
        "vqkit.cli.prior",
        "main",
        "train, calibrate, evaluate or carry the autoregressive prior over codes",
    ),
    "sample": ("vqkit.cli.sample", "sample_main", "sample new images from the prior"),
    "complete": ("vqkit.cli.sample", "complete_main", "keep the top code rows of an image, sample the rest"),
    "denoise": ("vqkit.cli.denoise", "main", "denoise images with a run trained on corrupted inputs"),
    "features": ("vqkit.cli.analysis", "features_main", "per-image codes, code histograms, pooled latents"),
    "probe": ("vqkit.cli.analysis", "probe_main", "linear-probe and k-NN accuracy on code features"),
    "codebook": ("vqkit.cli.analysis", "codebook_main", "picture of every code's patch, by usage"),
    "anomaly": ("vqkit.cli.analysis", "anomaly_main", "per-image anomaly scores (and AUROC)"),
    "similar": ("vqkit.cli.analysis", "similar_main", "retrieve similar images by code histograms"),
    "report": ("vqkit.cli.report", "main", "one self-contained HTML report of a run"),
}


PIXEL_LIMIT = "--max-image-pixels"


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: vqkit COMMAND [options]   (vqkit COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    lines += [
        "",
        "options of every command:",
        f"  {PIXEL_LIMIT} N  refuse image files above N pixels, from their header, before decoding "
        f"(default {DEFAULT_MAX_IMAGE_PIXELS:,}; a few KB of PNG can hold gigabytes of pixels)",
    ]
    return "\n".join(lines)


def _take_pixel_limit(args: list[str]) -> tuple[list[str], int | None]:
    """Remove ``--max-image-pixels N`` (or ``=N``) from anywhere in ``args``: it applies to every
    command that reads images, so it is read here once. Raises ValueError for a bad value."""
    rest: list[str] = []
    limit: int | None = None
    it = iter(args)
    for arg in it:
        if arg == PIXEL_LIMIT or arg.startswith(PIXEL_LIMIT + "="):
            value = arg.partition("=")[2] if "=" in arg else next(it, "")
            if not value.isdigit():
                raise ValueError(f"{PIXEL_LIMIT} takes a whole number of pixels, got {value!r}")
            limit = int(value)
        else:
            rest.append(arg)
    return rest, limit


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from vqkit._version import __version__

        print(f"vqkit {__version__}")
        return 0
    try:
        args, limit = _take_pixel_limit(args)
        if limit is not None:
            set_max_image_pixels(limit)
    except (ValueError, DataError) as e:
        print(f"vqkit: error: {e}", file=sys.stderr)
        return 2
    if not args:
        print(_usage(), file=sys.stderr)
        return 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"vqkit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function, _ = COMMANDS[name]
    fn = getattr(importlib.import_module(module_name), function)
    return run_safely(lambda: int(fn(rest)))


def entry() -> None:
    sys.exit(main())
