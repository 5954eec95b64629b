"""Prior coding with and without the output layer at positions nobody reads, same run, same grids.

In overlapping windows (entropy model 3) an interior window's first 2 rows and first 2 columns are
context: 28 of its 64 positions are fed to the prior but not coded. The stream used to run its output
layer (and the encoder its integer tables) at every position anyway; now ``PriorStream.push`` skips
the output layer where no logits were asked for, and the encoder skips the tables where no row of the
chunk codes. This times the encoder (``PriorCoder.segments``) and the decoder (``PriorCoder.decode``)
both ways on the same code grids, the former way restored by patching in the two former functions
(below, as they were), and checks that the tables and decoded codes are identical. Prints a table;
writes JSON (machine, command, date) to benchmarks/results/prior_context_steps-DATE.json.

    .venv/bin/python benchmarks/prior_context_steps.py --run benchmarks/runs/gpu-photo/photo-f4-k4096 \\
        --data ../shared/data/kodak --max-images 2
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
from vqkit.codec import EntropyModel
from vqkit.codec import entropy as codec_entropy
from vqkit.codec.api import encode_grids
from vqkit.priors import model as prior_model


def former_push(self: Any, codes: torch.Tensor) -> None:
    """PriorStream.push before: the whole position, output layer included."""
    self.logits()
    self._x = self.prior.token(codes.to(self._x.device))[:, None]
    self.pos, self._logits, self._h = self.pos + 1, None, None


def former_chunk_tables(self: Any, chunk: Any, grids: Any, shapes: Any) -> Any:
    """PriorCoder._chunk_tables before (streaming priors): tables at every position."""
    (th, tw), windows = self._windows(chunk, shapes)
    n, length = len(chunk), th * tw
    batch = torch.zeros((codec_entropy.PRIOR_BATCH, length), dtype=torch.int64)
    for b, (row, (sources, _)) in enumerate(zip(chunk, windows, strict=True)):
        batch[b] = torch.from_numpy(grids[row.image].reshape(-1)[sources].astype(np.int64))
    coded = np.stack([c for _, c in windows])
    stream = self._stream()
    steps = []
    for t in range(length):
        steps.append(self._step_tables(stream, n))
        stream.push(batch[:, t])
    return chunk, batch[:n].numpy(), coded, np.stack(steps, axis=1)


def main(argv: list[str] | None = None) -> int:
    a = common.prior_bench_args(__doc__, "kodak", 2).parse_args(argv)
    coding, images = common.load_prior_bench(a)
    coder = coding.require_prior(EntropyModel.PRIOR_OVERLAP)
    grids = coding.run.encode(images, batch_size=1)
    shapes = [g.shape for g in grids]
    payloads, _ = encode_grids(coding, grids, EntropyModel.PRIOR_OVERLAP)
    now_push, now_tables = prior_model.PriorStream.push, codec_entropy.PriorCoder._chunk_tables
    rows: list[dict[str, Any]] = []
    results: dict[str, tuple[list[Any], list[np.ndarray]]] = {}
    for way in ("former: every position", "now: coded positions only"):
        former = way.startswith("former")
        prior_model.PriorStream.push = former_push if former else now_push  # type: ignore[method-assign]
        codec_entropy.PriorCoder._chunk_tables = former_chunk_tables if former else now_tables  # type: ignore[method-assign]
        try:
            t0 = time.perf_counter()
            segments = list(coder.segments(grids))
            t1 = time.perf_counter()
            decoded = coder.decode(payloads, shapes)
            t2 = time.perf_counter()
        finally:
            prior_model.PriorStream.push = now_push  # type: ignore[method-assign]
            codec_entropy.PriorCoder._chunk_tables = now_tables  # type: ignore[method-assign]
        if not all(np.array_equal(x, y) for x, y in zip(decoded, grids, strict=True)):
            raise SystemExit(f"{way}: decoded codes differ from the codes written")
        results[way] = segments, decoded
        rows.append({"way": way, "encode_s_per_image": (t1 - t0) / len(grids),
                     "decode_s_per_image": (t2 - t1) / len(grids)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    (before, _), (after, _) = results.values()
    same = len(before) == len(after) and all(
        x[0] == y[0] and x[3] == y[3] and np.array_equal(x[1], y[1]) and np.array_equal(x[2], y[2])
        for x, y in zip(before, after, strict=True)
    )
    if not same:
        raise SystemExit("the two ways give different symbols or tables")
    enc = rows[0]["encode_s_per_image"] / rows[1]["encode_s_per_image"]
    dec = rows[0]["decode_s_per_image"] / rows[1]["decode_s_per_image"]
    print("\n| way | encode s/image | decode s/image |\n|---|---|---|")
    for r in rows:
        print(f"| {r['way']} | {r['encode_s_per_image']:.2f} | {r['decode_s_per_image']:.2f} |")
    print(f"\nformer / now: encode {enc:.2f}x, decode {dec:.2f}x; tables and codes identical")
    when = datetime.now()
    doc = {"benchmark": "prior_context_steps", "date": when.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": common.machine(), "run": str(a.run),
           "data": a.data, "images": len(grids), "threads": torch.get_num_threads(), "rows": rows,
           "speedup_encode": enc, "speedup_decode": dec, "identical": same}  # fmt: skip
    common.write_result(doc, "prior_context_steps", when, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
