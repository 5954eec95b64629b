"""Shared command-line plumbing: one clear message and a non-zero exit for expected failures."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

from vqkit.config import ConfigError
from vqkit.data import DataError
from vqkit.runs import RunError
from vqkit.training.loop import TrainingDiverged

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    RunError,
    TrainingDiverged,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
)


def run_safely(fn: Callable[[], int]) -> int:
    """Run a subcommand; expected failures print ``vqkit: error: ...`` and exit 1, no traceback."""
    try:
        return fn()
    except EXPECTED_ERRORS as e:
        print(f"vqkit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vqkit: interrupted", file=sys.stderr)
        return 130


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


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="arithmetic for the networks: auto (bf16 where the hardware has it natively), fp32, bf16",
    )
