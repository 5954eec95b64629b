"""The prior coder's integer tables: the tabulated weights (`vqkit.codec.tables`, since 2026-11-28)
against the formulation before them (two exp lookups, a product and a shift per logit, kept below),
in the same process on the same inputs.

1. Tables alone: (16, K) logits, the shape the coder asks for at every step of a 16-row batch.
2. Decoding lone prior-coded files (each image its own .vqk, decoded one at a time, as a user
   decompressing one photo): the same files decoded with the old and the new table function swapped
   into the coder, alternately, checking that both give exactly the codes the encoder wrote.

Prints a table; writes JSON (machine, command, date) to benchmarks/results/table_speed-DATE.json.

    .venv/bin/python benchmarks/table_speed.py --run benchmarks/runs/cpu-photo/photo-f4-k4096 \\
        --data ../shared/data/kodak --max-images 1 --repeats 2
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import numpy as np

import common
from vqkit.codec import compress_images, decode_codes, tables
from vqkit.codec import entropy as entropy_module
from vqkit.codec.tables import LOGIT_BITS, frequencies_from_logits, quantize_logits


def previous_frequencies(logits: np.ndarray) -> np.ndarray:
    """The formulation before the tabulated weights (vqkit up to commit 7e5e191)."""
    q = quantize_logits(logits)
    tables.check_codebook_size(q.shape[-1])
    whole, frac = tables._exp_tables()
    d = q.max(axis=-1, keepdims=True) - q
    a = d >> LOGIT_BITS
    weight = (whole[np.minimum(a, tables._NATS - 1)] * frac[d & ((1 << LOGIT_BITS) - 1)]) >> tables._FIXED
    weight = np.where(a < tables._NATS, weight, 0)
    return tables._scale_to_total(weight)


def per_call_ms(fn: Any, x: np.ndarray, calls: int) -> float:
    fn(x)
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return 1e3 * (time.perf_counter() - start) / calls


def main(argv: list[str] | None = None) -> int:
    p = common.prior_bench_args(__doc__, "kodak", 1)
    p.add_argument("--repeats", type=int, default=2, help="decodes of each file with each table function")
    a = p.parse_args(argv)
    when = datetime.now()
    coding, images = common.load_prior_bench(a)
    k = coding.run.model.codebook_size
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (16, k))
    same_tables = bool(np.array_equal(previous_frequencies(logits), frequencies_from_logits(logits)))
    micro = {
        "previous": per_call_ms(previous_frequencies, logits, 300),
        "tabulated": per_call_ms(frequencies_from_logits, logits, 300),
    }
    start = time.perf_counter()
    result = compress_images(coding, images, entropy_model="prior", quality=False)
    compress_s = time.perf_counter() - start
    decode_s: dict[str, list[float]] = {"previous": [], "tabulated": []}
    same_codes = True
    functions = {"previous": previous_frequencies, "tabulated": frequencies_from_logits}
    try:
        for _ in range(a.repeats):
            for name, fn in functions.items():  # alternate, so drift on a shared machine hits both
                entropy_module.frequencies_from_logits = fn  # type: ignore[assignment]
                start = time.perf_counter()
                for f, want in zip(result.files, result.grids, strict=True):
                    same_codes &= bool(np.array_equal(decode_codes(coding, f)[1][0], want))
                decode_s[name].append((time.perf_counter() - start) / len(result.files))
    finally:
        entropy_module.frequencies_from_logits = frequencies_from_logits
    best = {name: min(v) for name, v in decode_s.items()}
    print(f"K = {k}; {len(images)} image(s) of {a.data}, each its own file; compress {compress_s:.1f} s")
    print("| | previous | tabulated | ratio |")
    print("|---|---|---|---|")
    print(f"| tables, (16, {k}) logits, ms per call | {micro['previous']:.3f} | {micro['tabulated']:.3f} | "
          f"{micro['previous'] / micro['tabulated']:.2f} |")  # fmt: skip
    print(f"| decode alone, s per image (best of {a.repeats}) | {best['previous']:.2f} | "
          f"{best['tabulated']:.2f} | {best['previous'] / best['tabulated']:.2f} |")  # fmt: skip
    print(f"same tables: {same_tables}; both decode the encoder's codes: {same_codes}")
    doc = {
        "benchmark": "table_speed",
        "command": " ".join(sys.argv),
        "date": when.isoformat(timespec="seconds"),
        "machine": common.machine(),
        "run": str(a.run),
        "data": a.data,
        "images": len(images),
        "codebook_size": k,
        "compress_s": compress_s,
        "tables_ms_per_call": micro,
        "decode_s_per_image": decode_s,
        "same_tables": same_tables,
        "same_codes": same_codes,
    }
    common.write_result(doc, "table_speed", when, a.out)
    print(json.dumps({"decode_ratio": best["previous"] / best["tabulated"]}))
    return 0 if same_tables and same_codes else 1


if __name__ == "__main__":
    sys.exit(main())
