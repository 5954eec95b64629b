"""Encoder-side code search: the exact influence radius against the former, wider bound, same run.

Each trial of the search (``vqkit.codec.search``) decodes the window of codes that the changed code's
pixels depend on: 4r + 1 codes square, r = ``influence_radius``. r used to count one code cell per
upsampling layer (5 at f = 4); a pixel is reached from at most one cell away through all of them
together (4 at f = 4). This times the search both ways on the same images and counts the codes
they choose differently (the scored differences are exact either way up to float rounding, so only
near-ties can differ). Prints a table; writes JSON (machine, command, date) to
benchmarks/results/search_speed-DATE.json.

    .venv/bin/python benchmarks/search_speed.py --run benchmarks/runs/gpu-photo/photo-f4-k4096 \\
        --data ../shared/data/kodak --max-images 2 --passes 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

import common
from vqkit.codec import Coding
from vqkit.codec import api as codec_api
from vqkit.codec import search as codec_search
from vqkit.codec.files import read_inputs
from vqkit.config import ModelConfig
from vqkit.run import Run


def former_radius(cfg: ModelConfig) -> int:
    """The bound used before: one code cell per upsampling layer."""
    return 1 + cfg.res_blocks + int(np.log2(cfg.downsample))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder (its prior gives the rate, if any)")
    p.add_argument("--data", default=str(common.SHARED_DATA / "kodak"), help="images to search")
    p.add_argument("--max-images", type=int, default=2, help="the first N images (default 2)")
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--lmbda", type=float, default=500.0)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    images, _ = read_inputs([a.data], a.max_images)
    coding = Coding(Run.load(a.run, "cpu"))
    config = codec_search.SearchConfig(a.passes, a.candidates, a.lmbda)
    exact = codec_search.influence_radius
    rows: list[dict[str, Any]] = []
    grids: dict[str, list[np.ndarray]] = {}
    for name, radius in (("former bound", former_radius), ("exact", exact)):
        codec_search.influence_radius = radius  # what window_sse reads
        try:
            t0 = time.perf_counter()
            grids[name] = codec_api._encode(coding, images, config, progress=False, entropy_model="prior")
            seconds = time.perf_counter() - t0
        finally:
            codec_search.influence_radius = exact
        r = radius(coding.run.model.config)
        rows.append({"radius": name, "r": r, "window_codes": 4 * r + 1, "seconds": seconds,
                     "s_per_image": seconds / len(images)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    # Exact in arithmetic, not in floats: the windows differ in size, so the decoder runs other kernel
    # shapes and a near-tie between two candidates may fall the other way.
    differ = sum(int((x != y).sum()) for x, y in zip(*grids.values(), strict=True))
    total = sum(g.size for g in grids["exact"])
    same = differ == 0
    ratio = rows[0]["seconds"] / rows[1]["seconds"]
    print("\n| radius | r | window (codes) | s/image |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['radius']} | {row['r']} | {row['window_codes']}x{row['window_codes']} "
              f"| {row['s_per_image']:.1f} |")  # fmt: skip
    print(f"\nformer / exact: {ratio:.2f}x; {differ} of {total} codes chosen differently")
    now = datetime.now()
    doc = {"benchmark": "search_speed", "date": now.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": common.machine(), "run": str(a.run),
           "data": a.data, "images": len(images), "passes": a.passes, "candidates": a.candidates,
           "lmbda": a.lmbda, "rows": rows, "speedup": ratio, "codes_identical": same,
           "codes_differing": differ, "codes": total}  # fmt: skip
    common.write_result(doc, "search_speed", now, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
