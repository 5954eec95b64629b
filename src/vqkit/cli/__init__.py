"""The ``vqkit`` command line. Each subcommand is a module with ``main(argv) -> int``."""

from __future__ import annotations

import importlib
import sys

from vqkit.cli.common import run_safely

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("vqkit.cli.train", "train a VQ-VAE into a run folder (resumable)"),
    "eval": ("vqkit.cli.evaluate", "evaluate a run on a data set: PSNR, SSIM, codebook health"),
    "reconstruct": ("vqkit.cli.reconstruct", "picture of images beside their reconstructions"),
    "encode": ("vqkit.cli.codes", "encode a data set to index grids (.npz)"),
    "decode": ("vqkit.cli.codes", "decode index grids (.npz) to PNG images"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: vqkit COMMAND [options]   (vqkit COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from vqkit import __version__

        print(f"vqkit {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"vqkit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if name in ("encode", "decode"):
        return run_safely(lambda: module.main([name, *rest]))
    return run_safely(lambda: module.main(rest))


def entry() -> None:
    sys.exit(main())
