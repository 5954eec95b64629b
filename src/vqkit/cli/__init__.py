"""The ``vqkit`` command line. Each subcommand is a module with ``main(argv) -> int``."""

from __future__ import annotations

import importlib
import sys

from vqkit.cli.common import run_safely

# subcommand -> (module, function `(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
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


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: vqkit COMMAND [options]   (vqkit COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from vqkit._version import __version__

        print(f"vqkit {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"vqkit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function, _ = COMMANDS[name]
    try:
        fn = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError):
        print(f"vqkit: {name} is not available in this installation", file=sys.stderr)
        return 2
    return run_safely(lambda: int(fn(rest)))


def entry() -> None:
    sys.exit(main())
