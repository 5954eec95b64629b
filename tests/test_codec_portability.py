"""Files of the grouped prior (entropy model 4) decode bit-exactly under every CPU kernel setting: written
by `vqkit compress` in a process with one setting, read by `vqkit decompress` in processes with each of
the others (ATen's CPU capability, MKL's instruction set, one or two threads), end to end through the
command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vqkit.codec import decode_codes
from vqkit.visual import save_png

from .golden.make_golden import blob_images, grouped_run
from .test_integer_prior import cpu_flags

SRC = Path(__file__).resolve().parents[1] / "src"


def settings() -> tuple[list[dict[str, str]], list[str]]:
    """The environments to decode under (those this CPU can run) and the names of those it cannot."""
    flags = cpu_flags()
    wanted = [({"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}, True),
              ({"ATEN_CPU_CAPABILITY": "avx2"}, "avx2" in flags),
              ({"ATEN_CPU_CAPABILITY": "avx512"}, "avx512f" in flags and "avx512bw" in flags),
              ({"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, "sse4_2" in flags),
              ({"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "avx2" in flags)]  # fmt: skip
    runnable = [env for env, ok in wanted if ok]
    missing = [" ".join(f"{k}={v}" for k, v in env.items()) for env, ok in wanted if not ok]
    return runnable, missing


def vqkit(args: list[str], env: dict[str, str]) -> None:
    full = {**os.environ, **env, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-m", "vqkit", *args], env=full, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_files_decode_identically_under_every_kernel_setting(tmp_path: Path) -> None:
    run = grouped_run(tmp_path / "run", schedule="4x4-8", shuffle=True)
    inputs = tmp_path / "in"
    sizes = [(16, 16), (12, 20), (40, 28), (16, 16)]  # grids 4x4, 3x5, 10x7: every step, partial tiles
    for i, size in enumerate(sizes):
        save_png(blob_images(1, size, 70 + i)[0], inputs / f"im{i}.png")
    first, *others = settings()[0]
    vqkit(["compress", str(run), str(inputs), "-o", str(tmp_path / "vqk"), "--entropy-model", "grouped",
           "--no-progress"], {**first, "OMP_NUM_THREADS": "2"})  # fmt: skip
    files = sorted((tmp_path / "vqk").glob("*.vqk"))
    assert len(files) == len(sizes)
    want = {f.stem: decode_codes(run, f.read_bytes())[1][0] for f in files}  # this process's setting
    for n, env in enumerate([first, *others]):
        out = tmp_path / f"out{n}"
        vqkit(
            ["decompress", *map(str, files), "--run", str(run), "-o", str(out), "--codes", "--no-progress"],
            env,
        )
        for stem, grid in want.items():
            np.testing.assert_array_equal(np.load(out / f"{stem}.codes.npy"), grid, err_msg=str(env))
            assert (out / f"{stem}.png").is_file()
    missing = settings()[1]
    if missing:
        pytest.skip(f"checked {len(others) + 1} settings; this CPU cannot run {', '.join(missing)}")
