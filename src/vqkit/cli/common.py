"""Shared command-line plumbing: one clear message and a non-zero exit for expected failures."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from vqkit.config import ConfigError
from vqkit.data import DataError
from vqkit.training.checkpoint import RunError
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


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="arithmetic for the networks: auto (bf16 where the hardware has it natively), fp32, bf16",
    )
