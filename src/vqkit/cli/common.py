"""Shared command-line plumbing: one clear message and a non-zero exit for expected failures."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from vqkit.config import ConfigError
from vqkit.data import DataError
from vqkit.precision import PRECISIONS
from vqkit.runs import Run, RunError, registry, shipped
from vqkit.training.loop import TrainingDiverged, resolve_device

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    RunError,
    TrainingDiverged,
    # Every operating-system error on the paths a user gives (missing, a file where a folder must be,
    # a read-only or full filesystem, no permission) is theirs to fix: its message names the path.
    OSError,
)


# The exit status of a command stopped by Ctrl-C (128 + SIGINT, as shells report it); the training
# commands also give it when SIGINT or SIGTERM stopped them after saving a resumable checkpoint.
INTERRUPTED = 130


def run_safely(fn: Callable[[], int]) -> int:
    """Run a subcommand; expected failures print ``vqkit: error: ...`` and exit 1, no traceback."""
    try:
        return fn()
    except EXPECTED_ERRORS as e:
        print(f"vqkit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vqkit: interrupted", file=sys.stderr)
        return INTERRUPTED


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"vqkit {prog}", description=description)


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads (default: torch's, one per core); prior coding runs this many batches or "
        "images side by side, each on one thread, so the files do not depend on it",
    )


def apply_threads(p: argparse.ArgumentParser, threads: int | None) -> None:
    """Set torch's thread count from --threads (None: leave torch's default)."""
    if threads is None:
        return
    if threads < 1:
        p.error("--threads must be >= 1")
    torch.set_num_threads(threads)


RUN_HELP = "run folder: a trained model (vqkit train -o RUN), or a shipped model's name (vqkit models)"


def run_ref(text: str) -> Path:
    """A RUN argument: a run folder, or the name of a model shipped with vqkit (a folder of that name
    in the working directory wins); see vqkit.runs.shipped."""
    return shipped.resolve(text)


def add_run(p: argparse.ArgumentParser, help: str = RUN_HELP) -> None:
    """The trained model every command that uses one takes as its first positional argument."""
    p.add_argument("run", type=run_ref, help=help)


def add_output(p: argparse.ArgumentParser, help: str, *, required: bool = True) -> None:
    """Where a command writes: ``-o/--output`` on every command that writes a file or folder."""
    p.add_argument("-o", "--output", type=Path, required=required, help=help)


def add_json(p: argparse.ArgumentParser, what: str = "the results") -> None:
    """``--json PATH`` on every command that computes figures."""
    p.add_argument("--json", type=Path, metavar="PATH", help=f"also write {what} here as JSON")


DEVICE_HELP = "torch device: auto (cuda when there is a GPU, else cpu), cpu, cuda, cuda:1"
PRECISION_HELP = "arithmetic for the networks: auto (bf16 where the hardware has it natively), fp32, bf16"


def device_arg(text: str) -> str:
    """--device resolved at parse time ("auto": cuda when available, else cpu), so every command and
    library call sees a concrete device name; a device this machine lacks is a usage error."""
    try:
        return str(resolve_device(text))
    except RuntimeError as e:  # torch: unknown device string; resolve_device: no CUDA
        raise argparse.ArgumentTypeError(str(e)) from None


def device_name(text: str) -> str:
    """--device checked but kept as given (train writes it into the run's config, where "auto" must
    stay "auto" so the run resumes on another machine)."""
    device_arg(text)
    return text


def add_device(p: argparse.ArgumentParser, *, from_config: bool = False, precision: str = "auto") -> None:
    """``--device`` (default auto) and ``--precision``. ``from_config`` (the training commands): both
    default to the config's train.device / train.precision (a --config file or --set), else auto, so
    the flags are None unless given; the device is checked but kept as given (device_name)."""
    if from_config:
        config = " (default: the config's train.{}, else auto)"
        p.add_argument("--device", type=device_name, help=DEVICE_HELP + config.format("device"))
        p.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP + config.format("precision"))
        return
    p.add_argument("--device", type=device_arg, default="auto", help=DEVICE_HELP + " (default auto)")
    p.add_argument("--precision", default=precision, choices=PRECISIONS,
                   help=f"{PRECISION_HELP} (default {precision})")  # fmt: skip


def setting_given(overrides: list[str], key: str) -> bool:
    """Whether ``--set KEY=...`` is among the overrides."""
    return any(o.split("=", 1)[0].strip() == key for o in overrides)


def load_run(path: Path, device: str, precision: str = "auto") -> Run:
    """Load the run a command uses (``device`` as --device gives it: already resolved), and record it
    in the local run registry, so that files naming its model by fingerprint find it later (``vqkit
    decompress`` without ``--run``)."""
    run = Run.load(path, device, precision)
    registry.register(run.path)
    return run


def report_skipped(problems: list[str]) -> None:
    """Name the input files that were skipped (--strict makes the first one an error instead)."""
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        lines = "\n".join(f"  {p}" for p in problems[:5])
        print(f"vqkit: skipped {len(problems)} unreadable image file(s){more}:\n{lines}", file=sys.stderr)
