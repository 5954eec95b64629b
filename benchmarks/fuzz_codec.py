"""Fuzz of the .vqk decoder: mutated version-3, -4 and -5 files (bit flips, byte overwrites, truncations,
splices from other files, header edits, payload flips) must be refused with one CodecError or decode
to exactly what the unmutated file decodes to. Anything else is counted: a silent wrong decode, a
traceback (any other exception), a hang (a decode over --timeout seconds), and the peak memory.

    .venv/bin/python benchmarks/fuzz_codec.py --iterations 10000
    .venv/bin/python benchmarks/fuzz_codec.py --minutes 10 --seed 3
    .venv/bin/python benchmarks/fuzz_codec.py --versions 5 --legacy-share 0   # version 5 files only

Version 4 seeds are the golden files of every entropy model, the residual VQ archives (stage counts) and
the grouped prior's archive (entropy model 4, its integer network), each decoded with its own run;
version 5 seeds are the same files in the compact layout and a grouped archive whose integer prior
has a code order (integer prior format 3).
Also fuzzes the version-1/2 golden files (no checksums): those may decode to other pixels, but never
raise anything but CodecError, hang or grow memory. Prints a table, writes JSON under
benchmarks/results/ and exits 1 on any silent wrong decode, traceback or hang; the first few failing
inputs are saved beside the JSON.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from types import FrameType

import numpy as np

from common import ROOT, machine, write_result
from vqkit.codec import CodecError, Coding, decompress, parse

GOLDEN = ROOT / "tests" / "golden"
KINDS = ("bit_flip", "byte_overwrite", "truncate", "splice", "header_edit", "payload_flip")


class Hang(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


def mutate(data: bytes, kind: str, donors: list[bytes], rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    n = len(out)
    if kind == "bit_flip":  # 1 to 4 bits anywhere
        for _ in range(int(rng.integers(1, 5))):
            out[int(rng.integers(0, n))] ^= 1 << int(rng.integers(0, 8))
    elif kind == "byte_overwrite":
        for _ in range(int(rng.integers(1, 4))):
            out[int(rng.integers(0, n))] = int(rng.integers(0, 256))
    elif kind == "truncate":
        del out[int(rng.integers(0, n)) :]
    elif kind == "splice":  # a run of bytes from another file (or this one) replaces or joins a run here
        donor = donors[int(rng.integers(0, len(donors)))]
        start, length = int(rng.integers(0, len(donor))), int(rng.integers(1, 33))
        at = int(rng.integers(0, n + 1))
        piece = donor[start : start + length]
        out[at : at + (len(piece) if rng.random() < 0.5 else 0)] = piece
    elif kind == "header_edit":  # a field of the header or index set to another value
        end = parse(data).payload_offset
        pos = int(rng.integers(2, end))
        out[pos] = (out[pos] + int(rng.integers(1, 256))) % 256
    elif kind == "payload_flip":  # the payloads only: the index still parses
        start = parse(data).payload_offset
        if n > start:
            for _ in range(int(rng.integers(1, 5))):
                out[int(rng.integers(start, n))] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def outcome(coding: Coding, data: bytes, reference: list[np.ndarray], timeout: float) -> str:
    """'refused', 'same' (decoded to the unmutated file's images) or 'different'; other exceptions and
    Hang propagate."""
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        images = decompress(coding, data, name="fuzz")
    except CodecError:
        return "refused"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    same = len(images) == len(reference) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(images, reference, strict=True)
    )
    return "same" if same else "different"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=10_000, help="mutated files (default 10,000)")
    p.add_argument("--minutes", type=float, help="stop after this long instead")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds after which a decode is a hang")
    p.add_argument("--legacy-share", type=float, default=0.2, help="share of inputs from version-1/2 files")
    p.add_argument("--versions", default="3,4,5", help="format versions of the seed files (default 3,4,5)")
    p.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/fuzz_codec-DATE.json)")
    a = p.parse_args(argv)
    signal.signal(signal.SIGALRM, _alarm)
    codings = {"run": Coding(GOLDEN / "run"), "rvq": Coding(GOLDEN / "v4" / "rvq_run"),
               "grouped": Coding(GOLDEN / "v4" / "grouped_run"),
               "grouped5": Coding(GOLDEN / "v5" / "grouped_run")}  # fmt: skip

    def run_of(name: str) -> Coding:
        folder, _, stem = name.rpartition("/")
        if stem.startswith("grouped"):
            return codings["grouped5" if folder == "v5" else "grouped"]
        return codings["rvq" if stem.startswith("rvq") else "run"]

    versions = [int(v) for v in a.versions.split(",")]
    if not versions or any(v not in (3, 4, 5) for v in versions):
        p.error("--versions takes format versions among 3, 4 and 5")
    seeds = {
        f"v{v}/{path.name}": path.read_bytes()
        for v in versions
        for path in sorted((GOLDEN / f"v{v}").glob("*.vqk"))
    }
    legacy = {path.name: path.read_bytes() for path in sorted(GOLDEN.glob("*.vqk"))}
    reference = {name: decompress(run_of(name), data) for name, data in {**seeds, **legacy}.items()}
    donors = [*seeds.values(), *legacy.values()]
    rng = np.random.default_rng(a.seed)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    table: dict[tuple[str, str], dict[str, int]] = {}
    failures: list[str] = []
    when = datetime.now()
    deadline = time.time() + 60 * a.minutes if a.minutes else None
    n, slowest = 0, 0.0
    while (time.time() < deadline) if deadline else (n < a.iterations):
        pool = legacy if rng.random() < a.legacy_share else seeds
        name = sorted(pool)[int(rng.integers(0, len(pool)))]
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        data = mutate(pool[name], kind, donors, rng)
        group = name.split("/")[0] if "/" in name else "v1/v2"
        row = table.setdefault((group, kind), {"inputs": 0, "refused": 0, "same": 0, "different": 0,
                                               "traceback": 0, "hang": 0})  # fmt: skip
        row["inputs"] += 1
        started = time.perf_counter()
        try:
            result = outcome(run_of(name), data, reference[name], a.timeout)
        except Hang:
            result = "hang"
        except Exception:
            result = "traceback"
            if len(failures) < 5:
                failures.append(f"input {n} ({kind} of {name}):\n{traceback.format_exc()}")
        slowest = max(slowest, time.perf_counter() - started)
        row[result] += 1
        if result in ("traceback", "hang") or (result == "different" and group != "v1/v2"):
            if len(failures) < 5:
                failures.append(f"input {n} ({kind} of {name}): {result}")
            bad = ROOT / "benchmarks" / "results" / f"fuzz-failure-{a.seed}-{n}.vqk"
            bad.parent.mkdir(parents=True, exist_ok=True)
            bad.write_bytes(data)
        n += 1
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    header = f"{'files':<6} {'mutation':<15} {'inputs':>7} {'refused':>8} {'same':>6} {'different':>10} "
    print(header + f"{'traceback':>10} {'hang':>5}")
    totals = dict.fromkeys(("inputs", "refused", "same", "different", "traceback", "hang"), 0)
    for (group, kind), row in sorted(table.items()):
        cells = zip(totals, (7, 8, 6, 10, 10, 5), strict=True)
        print(f"{group:<6} {kind:<15} " + " ".join(f"{row[k]:>{w}}" for k, w in cells))
        for k in totals:
            totals[k] += row[k]
    silent = sum(row["different"] for (group, _), row in table.items() if group != "v1/v2")
    growth_mb = (rss_peak - rss_start) / 1024
    print(
        f"\n{n} inputs: {silent} silent wrong decodes of version-3 to 5 files, {totals['traceback']} "
        f"tracebacks, {totals['hang']} hangs; slowest decode {slowest:.3f} s; peak memory "
        f"{rss_peak / 1024:.0f} MB ({growth_mb:.0f} MB above the start)"
    )
    for f in failures:
        print(f)
    doc = {
        "benchmark": "fuzz_codec",
        "date": when.isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv],
        "machine": machine(),
        "seed": a.seed,
        "inputs": n,
        "versions": versions,
        "silent_wrong_decodes_v3_up": silent,
        "totals": totals,
        "rows": [{"files": g, "mutation": k, **row} for (g, k), row in sorted(table.items())],
        "slowest_decode_s": round(slowest, 4),
        "peak_rss_mb": round(rss_peak / 1024, 1),
        "rss_growth_mb": round(growth_mb, 1),
        "failures": failures,
    }
    write_result(doc, "fuzz_codec", when, a.out)
    return 1 if silent or totals["traceback"] or totals["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
