"""Long fuzz of the .vqk decoder: mutated and truncated golden files must decode to valid images or raise
CodecError, never anything else, never hang (each decode is timed) and never allocate without bound.

    .venv/bin/python benchmarks/fuzz_codec.py --minutes 10
    .venv/bin/python benchmarks/fuzz_codec.py --iterations 2000 --seed 3

The default test suite runs a short version (tests/test_codec_format.py). A failing input is saved to
benchmarks/results/fuzz-failure-SEED-N.vqk with the traceback beside it; the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from vqkit.codec import CodecError, Coding, decompress, parse

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """A random mix of bit flips, byte overwrites, insertions, deletions, duplications and a cut."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        kind = int(rng.integers(0, 6))
        pos = int(rng.integers(0, len(out) + 1))
        if kind == 0 and out:
            out[pos % len(out)] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1 and out:
            out[pos % len(out)] = int(rng.integers(0, 256))
        elif kind == 2:
            out[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif kind == 3 and out:
            del out[pos : pos + int(rng.integers(1, 9))]
        elif kind == 4 and out:
            start = int(rng.integers(0, len(out)))
            out[pos:pos] = out[start : start + int(rng.integers(1, 17))]
        elif kind == 5:
            out[pos % (len(out) + 1) :] = b""  # truncate
    return bytes(out)


def mutate_payload(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip bits only after the index: the file still parses, so the entropy decoders get garbage."""
    start = parse(data).payload_offset
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        if len(out) > start:
            out[int(rng.integers(start, len(out)))] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def check(coding: Coding, data: bytes) -> str:
    """'decoded' or 'refused'; anything but CodecError propagates."""
    try:
        images = decompress(coding, data, name="fuzz")
    except CodecError:
        return "refused"
    records = parse(data).records
    if len(images) != len(records):
        raise AssertionError(f"{len(images)} images for {len(records)} records")
    for image, r in zip(images, records, strict=True):
        if image.dtype != np.uint8 or image.shape != (r.height, r.width, r.mode.channels):
            raise AssertionError(f"decoded {image.dtype} {image.shape} for record {r}")
    return "decoded"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0, help="stop after this long (default 5)")
    p.add_argument("--iterations", type=int, help="stop after this many inputs instead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slow", type=float, default=10.0, help="report any single decode over this many seconds")
    a = p.parse_args(argv)
    coding = Coding(GOLDEN / "run")
    seeds = {path.name: path.read_bytes() for path in sorted(GOLDEN.glob("*.vqk"))}
    rng = np.random.default_rng(a.seed)
    counts = {"decoded": 0, "refused": 0}
    slowest, deadline, n = 0.0, time.time() + 60 * a.minutes, 0
    while (n < a.iterations) if a.iterations else (time.time() < deadline):
        name = list(seeds)[int(rng.integers(0, len(seeds)))]
        data = (mutate if rng.random() < 0.5 else mutate_payload)(seeds[name], rng)
        started = time.perf_counter()
        try:
            counts[check(coding, data)] += 1
        except Exception:
            out = ROOT / "benchmarks" / "results" / f"fuzz-failure-{a.seed}-{n}.vqk"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            out.with_suffix(".txt").write_text(f"mutated from {name}\n{traceback.format_exc()}")
            print(f"FAILURE on input {n} (from {name}): saved {out}\n{traceback.format_exc()}")
            return 1
        elapsed = time.perf_counter() - started
        slowest = max(slowest, elapsed)
        if elapsed > a.slow:
            print(f"slow: input {n} from {name} took {elapsed:.1f} s")
        n += 1
    print(json.dumps({"inputs": n, **counts, "slowest_decode_s": round(slowest, 3), "seed": a.seed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
