"""Encoder-side code search: this checkout's search against the search of an earlier commit, same run,
same images, same process, one after the other.

The baseline's ``vqkit/codec/search.py`` is read from git (``--baseline``) and swapped into the codec
for its turn, so everything else (prior coding, decoder) is the same code. Each variant compresses the
images with the search (`compress_images(..., search=...)`, prior-coded files); the table gives the
seconds spent in the search alone, the actual bits per pixel and PSNR of the files, and how many codes
the two chose differently.

History: at 97c1da1 (2026-11-27) this script timed the exact influence radius against the former,
wider bound (benchmarks/results/search_speed-20261127-2356.json); d5e918f is the last search that
decoded each position's whole (4r + 1)^2 window alone, one position after another, before windows
dropped the rings of cells they no longer need and far-apart positions were scored in one batch
(the visiting order within a sweep step changed with it, so near-ties can fall either way).

With ``--rates``, instead: one search configuration under each rate model, in one process, one
after the other on the same images: no search (the plain encoder's codes), the static table, the
serial prior of ``--serial-run`` (a run with the same VQ-VAE weights and a serial prior; skipped
without one) and the grouped prior of ``--run`` (model.kind=grouped), with the seconds per image
spent in the search, PSNR, and bits per code under the grouped prior's float rate (what its coder
approximates), so the gain of each beside its cost. Times on a shared machine are noisy: compare the
rows of one run, not runs.

With ``--configs P:C:R ...``, instead: real .vqk files coded by the grouped prior of ``--run``,
compressed without search and then with each search configuration (P passes, C candidates, scored
radius R, ``x`` for exact), in one process: seconds per image to compress (median), actual bpp and
PSNR, and the change against no search; the evidence for the default search.

Prints a table; writes JSON (machine, command, date) to benchmarks/results/search_speed-DATE.json.

    .venv/bin/python benchmarks/search_speed.py --run benchmarks/runs/cpu-photo/photo-f4-k4096 \\
        --data ../shared/data/kodak --max-images 2 --passes 2
    .venv/bin/python benchmarks/search_speed.py --rates --run RUN_WITH_GROUPED_PRIOR \\
        --serial-run RUN_WITH_SERIAL_PRIOR --max-images 1 --passes 1 --candidates 2 --radius 1
    .venv/bin/python benchmarks/search_speed.py --run RUN_WITH_GROUPED_PRIOR --max-images 3 \\
        --configs 1:2:1 1:4:1 1:4:x 2:4:1
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

import common
from vqkit.codec import Coding, compress_images
from vqkit.codec import api as codec_api
from vqkit.codec import search as codec_search
from vqkit.codec.files import read_inputs
from vqkit.data import to_float
from vqkit.metrics import psnr_per_image
from vqkit.priors import load_prior
from vqkit.priors.grouped import GroupedPrior
from vqkit.runs import Run, model_digest

ROOT = Path(__file__).resolve().parent.parent


def baseline_module(revision: str) -> ModuleType:
    """vqkit/codec/search.py as it was at ``revision``, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:src/vqkit/codec/search.py"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="vqkit-search-"))
    path = folder / "search_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("search_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder with a prior")
    p.add_argument("--data", default=str(common.SHARED_DATA / "kodak"), help="images to search")
    p.add_argument("--max-images", type=int, default=2, help="the first N images (default 2)")
    p.add_argument("--baseline", default="d5e918f", help="git revision whose search to compare with")
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--lmbda", type=float, default=500.0)
    p.add_argument("--radius", type=int, help="scored cells around a position (default: exact)")
    p.add_argument("--rates", action="store_true", help="compare rate models (see above)")
    p.add_argument("--serial-run", type=Path, help="with --rates: a run of the same weights, serial prior")
    p.add_argument("--configs", nargs="+", metavar="P:C:R", help="compare search settings (see above)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    if a.rates:
        return rates(a)
    if a.configs:
        return configs(a)
    images, _, _ = read_inputs([a.data], a.max_images, strict=True)
    coding = Coding(Run.load(a.run, "cpu"))
    config = codec_search.SearchConfig(a.passes, a.candidates, a.lmbda)
    variants: dict[str, Callable[..., Any]] = {
        f"baseline {a.baseline}": baseline_module(a.baseline).search_grids,
        "this checkout": codec_search.search_grids,
    }
    rows: list[dict[str, Any]] = []
    grids: list[list[np.ndarray]] = []
    for name, search_grids in variants.items():
        spent = [0.0]

        def timed(*args: Any, fn: Callable[..., Any] = search_grids, spent: list[float] = spent,
                  **kwargs: Any) -> Any:  # fmt: skip
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        codec_api.search_grids = timed  # type: ignore[assignment]  # what _encode calls
        try:
            start = time.perf_counter()
            result = compress_images(coding, images, entropy_model="prior", search=config)
            total = time.perf_counter() - start
        finally:
            codec_api.search_grids = codec_search.search_grids
        summary = result.summary()
        grids.append(result.grids)
        rows.append({"search": name, "search_s_per_image": spent[0] / len(images),
                     "compress_s_per_image": total / len(images), "bpp": summary["bpp_actual"],
                     "psnr": summary["psnr"]})  # fmt: skip
        print(rows[-1], flush=True)
    differ = sum(int((x != y).sum()) for x, y in zip(*grids, strict=True))
    codes = sum(g.size for g in grids[0])
    speedup = rows[0]["search_s_per_image"] / rows[1]["search_s_per_image"]
    print(f"\n{len(images)} image(s) of {a.data}; search {a.passes}:{a.candidates}:{a.lmbda:g}")
    print("| search | s/image in the search | s/image compressing | bpp | PSNR dB |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['search']} | {row['search_s_per_image']:.1f} | {row['compress_s_per_image']:.1f} "
              f"| {row['bpp']:.4f} | {row['psnr']:.2f} |")  # fmt: skip
    print(f"\nsearch time, baseline / this checkout: {speedup:.2f}x; {differ} of {codes} codes differ")
    now = datetime.now()
    doc = {"benchmark": "search_speed", "date": now.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": common.machine(), "run": str(a.run),
           "data": a.data, "images": len(images), "baseline": a.baseline, "passes": a.passes,
           "candidates": a.candidates, "lmbda": a.lmbda, "rows": rows, "speedup": speedup,
           "codes_differing": differ, "codes": codes}  # fmt: skip
    common.write_result(doc, "search_speed", now, a.out)
    return 0


def rates(a: argparse.Namespace) -> int:
    """The --rates comparison: the same search under each rate model, its cost and its gain."""
    images, _, _ = read_inputs([a.data], a.max_images, strict=True)
    run = Run.load(a.run, "cpu")
    grouped = load_prior(a.run).float().eval()
    if not isinstance(grouped, GroupedPrior):
        raise SystemExit(f"{a.run} has no grouped prior (model.kind=grouped)")
    serial = None
    if a.serial_run is not None:
        if model_digest(a.serial_run) != model_digest(a.run):
            raise SystemExit(f"{a.serial_run} holds other VQ-VAE weights than {a.run}")
        serial_coding = Coding(Run.load(a.serial_run, "cpu"))
        serial = serial_coding.search_prior()
    bits = Coding(run).static_bits()
    config = codec_search.SearchConfig(a.passes, a.candidates, a.lmbda, radius=a.radius)
    cases: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
        "no search": None,
        "static table": lambda im: codec_search.search_grids(run, im, config, bits),
        "serial prior": None if serial is None else (
            lambda im: codec_search.search_grids(run, im, config, None, None, serial)),
        "grouped prior": lambda im: codec_search.search_grids(run, im, config, None, None, grouped),
    }  # fmt: skip
    rows: list[dict[str, Any]] = []
    for name, search in cases.items():
        if name != "no search" and search is None:
            continue
        spent, psnrs, nats, codes = 0.0, [], 0.0, 0
        for im in images:
            start = time.perf_counter()
            grid = np.stack(run.encode([im])) if search is None else search(im[None])
            spent += time.perf_counter() - start if search is not None else 0.0
            out = run.decode(grid, im.shape[:2])[0]
            x, y = (to_float(torch.from_numpy(np.array(v[None]))) for v in (im, out))
            psnrs.append(float(psnr_per_image(x, y)[0]))
            with torch.no_grad():
                nats += float(grouped.nll_bits(torch.from_numpy(grid)).sum())
            codes += grid.size
        rows.append({"rate": name, "search_s_per_image": spent / len(images), "psnr": float(np.mean(psnrs)),
                     "bits_per_code": nats / codes})  # fmt: skip
        print(rows[-1], flush=True)
    base = rows[0]
    print(f"\n{len(images)} image(s) of {a.data}; search {a.passes}:{a.candidates}:{a.lmbda:g}, "
          f"radius {a.radius if a.radius is not None else 'exact'}")  # fmt: skip
    print("| rate | s/image in the search | PSNR dB | bits/code (grouped) | gain dB | bits change |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['rate']} | {row['search_s_per_image']:.2f} | {row['psnr']:.2f} | "
              f"{row['bits_per_code']:.3f} | {row['psnr'] - base['psnr']:+.2f} | "
              f"{100 * (row['bits_per_code'] / base['bits_per_code'] - 1):+.1f} % |")  # fmt: skip
    now = datetime.now()
    doc = {"benchmark": "search_speed", "mode": "rates", "date": now.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": common.machine(), "run": str(a.run),
           "serial_run": None if a.serial_run is None else str(a.serial_run), "data": a.data,
           "images": len(images), "passes": a.passes, "candidates": a.candidates, "lmbda": a.lmbda,
           "radius": a.radius, "rows": rows}  # fmt: skip
    common.write_result(doc, "search_speed", now, a.out)
    return 0


def parse_config(text: str, lmbda: float) -> codec_search.SearchConfig:
    passes, candidates, radius = text.split(":")
    return codec_search.SearchConfig(int(passes), int(candidates), lmbda,
                                     radius=None if radius == "x" else int(radius))  # fmt: skip


def configs(a: argparse.Namespace) -> int:
    """The --configs comparison: real grouped-prior files without search and with each setting."""
    images, _, _ = read_inputs([a.data], a.max_images, strict=True)
    coding = Coding(Run.load(a.run, "cpu"))
    if coding.grouped() is None:
        raise SystemExit(f"{a.run} has no grouped prior (model.kind=grouped)")
    settings: list[tuple[str, codec_search.SearchConfig | None]] = [("no search", None)]
    settings += [(text, parse_config(text, a.lmbda)) for text in a.configs]
    compress_images(coding, images[:1], entropy_model="grouped", quality=False)  # warm-up
    rows: list[dict[str, Any]] = []
    for name, config in settings:
        seconds, size, psnrs = [], 0, []
        for im in images:
            start = time.perf_counter()
            result = compress_images(coding, [im], entropy_model="grouped", search=config, progress=False)
            seconds.append(time.perf_counter() - start)
            size += len(result.files[0])
            psnrs.append(float(result.summary()["psnr"]))
        pixels = sum(im.shape[0] * im.shape[1] for im in images)
        rows.append({"search": name, "config": None if config is None else config.__dict__,
                     "compress_s_median": float(np.median(seconds)), "bpp": 8 * size / pixels,
                     "psnr": float(np.mean(psnrs))})  # fmt: skip
        print(rows[-1], flush=True)
    base = rows[0]
    print(f"\n{len(images)} image(s) of {a.data}, grouped prior, lambda {a.lmbda:g}")
    print("| search P:C:R | compress s/image (median) | bpp | PSNR dB | bpp change | PSNR gain dB |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        change = f"{100 * (row['bpp'] / base['bpp'] - 1):+.1f} % | {row['psnr'] - base['psnr']:+.2f}"
        print(f"| {row['search']} | {row['compress_s_median']:.2f} | {row['bpp']:.4f} | {row['psnr']:.2f} | "
              f"{change} |")  # fmt: skip
    now = datetime.now()
    doc = {"benchmark": "search_speed", "mode": "configs", "date": now.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": common.machine(), "run": str(a.run),
           "data": a.data, "images": len(images), "lmbda": a.lmbda, "rows": rows}  # fmt: skip
    common.write_result(doc, "search_speed", now, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
