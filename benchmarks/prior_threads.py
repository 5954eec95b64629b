"""Prior coding on one thread against several, same run, same files.

The prior's tables are computed in float64 in 16-row batches, each batch on one intra-op thread (what
keeps the numbers identical on any thread count). The encoder knows every code, so its batches
(chunks) can run side by side; the decoder reads an image's codes from one stream in order, so it
runs different images side by side (lanes). This compresses the same images with torch limited to
one thread and then to ``--threads``, checks that the files are byte-identical, decompresses them
all together (one .vqk per image, as `vqkit decompress` does) both ways and checks that the codes
are those written. Prints a table; writes JSON (machine, command, date) to
benchmarks/results/prior_threads-DATE.json.

    .venv/bin/python benchmarks/prior_threads.py --run benchmarks/runs/gpu-photo/photo-f4-k4096 \\
        --data ../shared/data/kodak --max-images 4
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import numpy as np
import torch

import common
from vqkit.codec import compress_images, decode_codes_many


def main(argv: list[str] | None = None) -> int:
    p = common.prior_bench_args(__doc__, "kodak", 4)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="default: torch's count")
    p.add_argument("--entropy-model", default="prior", choices=["prior", "prior-tiles"])
    a = p.parse_args(argv)
    coding, images = common.load_prior_bench(a)
    grids = coding.run.encode(images, batch_size=1)  # what both ways must decode to
    rows: list[dict[str, Any]] = []
    files: dict[int, list[bytes]] = {}
    for threads in (1, a.threads):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        result = compress_images(coding, images, entropy_model=a.entropy_model, quality=False)
        t1 = time.perf_counter()
        decoded = decode_codes_many(coding, result.files)
        t2 = time.perf_counter()
        if not all(np.array_equal(g[0], want) for (_, g), want in zip(decoded, grids, strict=True)):
            raise SystemExit(f"threads {threads}: decoded codes differ from the codes written")
        files[threads] = result.files
        rows.append({"threads": threads, "compress_s_per_image": (t1 - t0) / len(images),
                     "decompress_codes_s_per_image": (t2 - t1) / len(images),
                     "bpp_actual": result.summary()["bpp_actual"]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    if files[1] != files[a.threads]:
        raise SystemExit("the files differ between thread counts")
    enc = rows[0]["compress_s_per_image"] / rows[1]["compress_s_per_image"]
    dec = rows[0]["decompress_codes_s_per_image"] / rows[1]["decompress_codes_s_per_image"]
    print("\n| threads | compress s/image | decode codes s/image |\n|---|---|---|")
    for r in rows:
        print(
            f"| {r['threads']} | {r['compress_s_per_image']:.2f} | {r['decompress_codes_s_per_image']:.2f} |"
        )
    print(f"\n1 thread / {a.threads}: compress {enc:.2f}x, decode {dec:.2f}x; files byte-identical")
    now = datetime.now()
    doc = {"benchmark": "prior_threads", "date": now.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": common.machine(), "run": str(a.run),
           "data": a.data, "images": len(images), "entropy_model": a.entropy_model, "rows": rows,
           "speedup_compress": enc, "speedup_decode": dec, "files_identical": True}  # fmt: skip
    common.write_result(doc, "prior_threads", now, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
