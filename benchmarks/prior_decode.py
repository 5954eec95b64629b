"""Decoding prior-coded files: one file at a time (`decompress`) against many files together
(`decompress_many`, what `vqkit decompress` does), on the same one-image files. The prior walks every
grid position by position in batches of 16 rows, so alone a file pays for 15 padding rows; together the
rows hold other files' images. Checks that both ways give the same codes as the encoder wrote. Prints a
table; writes JSON (machine, command, date) to benchmarks/results/prior_decode-DATE.json.

    .venv/bin/python benchmarks/prior_decode.py --run benchmarks/runs/cifar10/budget60 --max-images 200
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import numpy as np

import common
from vqkit.codec import compress_images, decode_codes, decode_codes_many, decompress, decompress_many


def main(argv: list[str] | None = None) -> int:
    a = common.prior_bench_args(__doc__, "cifar10/val", 200).parse_args(argv)
    coding, images = common.load_prior_bench(a)
    t0 = time.perf_counter()
    result = compress_images(coding, images, entropy_model="prior", quality=False)
    t1 = time.perf_counter()
    one_by_one = [decompress(coding, f) for f in result.files]
    t2 = time.perf_counter()
    together = decompress_many(coding, result.files)
    t3 = time.perf_counter()
    # The codes must be exactly those written, both ways (the pixels go through the VQ-VAE decoder in
    # other batch sizes, so they may differ by a level; the format guarantees the codes).
    alone_codes = [decode_codes(coding, f)[1][0] for f in result.files[:20]]
    many_codes = [grids[0] for _, grids in decode_codes_many(coding, result.files)]
    same = all(np.array_equal(x, y) for x, y in zip(many_codes, result.grids, strict=True)) and all(
        np.array_equal(x, y) for x, y in zip(alone_codes, result.grids, strict=False)
    )
    if not same:
        raise SystemExit("decoded codes differ from the codes written")
    level = max(
        int(np.abs(x[0].astype(int) - y[0].astype(int)).max())
        for x, y in zip(one_by_one, together, strict=True)
    )
    n = len(images)
    rows: list[dict[str, Any]] = [
        {"way": "compress (one file per image)", "images_per_s": n / (t1 - t0)},
        {"way": "decompress one file at a time", "images_per_s": n / (t2 - t1)},
        {"way": "decompress all files together", "images_per_s": n / (t3 - t2)},
    ]
    for r in rows:
        print(json.dumps(r), flush=True)
    speedup = (t2 - t1) / (t3 - t2)
    print("\n| way | images/s |\n|---|---|")
    for r in rows:
        print(f"| {r['way']} | {r['images_per_s']:.1f} |")
    print(f"\ntogether / one at a time: {speedup:.1f}x; codes identical; pixels differ by at most {level}")
    now = datetime.now()
    doc = {"benchmark": "prior_decode", "date": now.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": common.machine(), "run": str(a.run),
           "data": a.data, "images": n, "rows": rows, "speedup_together": speedup,
           "max_pixel_difference": level, "bpp_actual": result.summary()["bpp_actual"]}  # fmt: skip
    common.write_result(doc, "prior_decode", now, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
