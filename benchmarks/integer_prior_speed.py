"""Speed of the integer prior (vqkit.priors.integer): every step of a grid, each step's features
(step_hidden), hi logits and lo logits given the true hi (as a decoder runs it, teacher-forced), with
the torch path (float GEMM on exact integers, and torch._int_mm) against the NumPy int64 reference.

Two sizes: the CIFAR-10 prior (K=512, E=16, radius 3, H=256, 2 layers) on a batch of 8x8 grids, and
a Kodak photo at downsampling 4 (K=4096, same network, one 192x128 grid). Random weights, exported
with export_integer on random grids: the arithmetic and its cost do not depend on the values. Every
path's logits are checked equal. Prints a table; --json writes the numbers.

    PYTHONPATH=src .venv/bin/python benchmarks/integer_prior_speed.py --batch 1000 --reference-batch 20
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from vqkit.priors.build import build_prior
from vqkit.priors.config import PriorConfig
from vqkit.priors.grouped import SCHEDULES, GroupedPrior, step_map
from vqkit.priors.integer import IntegerPrior
from vqkit.priors.integer_export import export_integer
from vqkit.priors.integer_reference import ReferencePrior


def integer_prior(k: int, schedule: str) -> IntegerPrior:
    torch.manual_seed(0)
    prior = build_prior(PriorConfig(kind="grouped", codebook_size=k, width=256, layers=2, embed_dim=16,
                                    radius=3, schedule=schedule))  # fmt: skip
    assert isinstance(prior, GroupedPrior)
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0.0, 0.05)
    return export_integer(prior.eval(), np.random.default_rng(0).integers(0, k, (16, 8, 8)))


def step_his(ip: IntegerPrior, grids: torch.Tensor) -> list[torch.Tensor]:
    """Per step, the hi parts (B, n_s) of its codes (raster order): what a decoder knows before lo."""
    flat = step_map(ip.schedule, *grids.shape[1:]).reshape(-1)
    rows = [torch.from_numpy(np.flatnonzero(flat == s)) for s in range(ip.steps)]
    return [grids.reshape(len(grids), -1)[:, r] // ip.k_lo for r in rows]


def all_steps_torch(
    ip: IntegerPrior, grids: torch.Tensor, his: list[torch.Tensor]
) -> tuple[float, list[torch.Tensor]]:
    """Seconds for every step (a_int, hi logits, lo logits given hi), and the logits."""
    ids = torch.full((len(grids),), ip.num_classes, dtype=torch.int64)
    start = time.perf_counter()
    out = []
    for s in range(ip.steps):
        a = ip.step_hidden(grids, s, ids)
        out += [ip.hi_logits(a), ip.lo_logits(a, his[s])]
    return time.perf_counter() - start, out


def all_steps_reference(
    ip: IntegerPrior, grids: np.ndarray, his: list[torch.Tensor]
) -> tuple[float, list[np.ndarray]]:
    c = ip.config
    ref = ReferencePrior(
        ip.arrays(), schedule=c.schedule, radius=c.radius, num_classes=c.num_classes, context=c.context
    )
    ids = np.full(len(grids), c.num_classes, dtype=np.int64)
    start = time.perf_counter()
    out = []
    for s in range(ip.steps):
        a = ref.step_hidden(grids, s, ids)
        out += [ref.hi_logits(a), ref.lo_logits(a, his[s][: len(grids)].numpy())]
    return time.perf_counter() - start, out


def measure(
    k: int, schedule: str, shape: tuple[int, int], batch: int, ref_batch: int, repeats: int
) -> dict[str, Any]:
    ip = integer_prior(k, schedule)
    grids = torch.randint(0, k, (batch, *shape), generator=torch.Generator().manual_seed(1))
    his = step_his(ip, grids)
    row: dict[str, Any] = {"codebook_size": k, "split": [ip.k_hi, ip.k_lo], "schedule": schedule,
                           "grid": list(shape), "batch": batch}  # fmt: skip
    outs = {}
    for matmul in ("float", "int_mm"):
        p = IntegerPrior(ip.config, ip.arrays(), matmul=matmul)
        warm = min(batch, 8)
        all_steps_torch(p, grids[:warm], [hi[:warm] for hi in his])  # warm-up
        times = []
        for _ in range(repeats):
            t, outs[matmul] = all_steps_torch(p, grids, his)
            times.append(t)
        row[f"torch_{matmul}_ms_per_grid"] = 1e3 * min(times) / batch
    assert all(torch.equal(a, b) for a, b in zip(outs["float"], outs["int_mm"], strict=True))
    n = min(ref_batch, batch)
    t, ref = all_steps_reference(ip, grids[:n].numpy(), his)
    row["reference_ms_per_grid"] = 1e3 * t / n
    row["reference_batch"] = n
    assert all(np.array_equal(a[:n].numpy(), b) for a, b in zip(outs["int_mm"], ref, strict=True))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1000, help="8x8 grids per CIFAR-size batch")
    ap.add_argument("--reference-batch", type=int, default=20, help="grids the NumPy reference times")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--schedules", nargs="*", default=sorted(SCHEDULES))
    ap.add_argument("--skip-kodak", action="store_true")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for schedule in args.schedules:
        rows.append(measure(512, schedule, (8, 8), args.batch, args.reference_batch, args.repeats))
        if not args.skip_kodak:
            rows.append(measure(4096, schedule, (192, 128), 1, 1, args.repeats))
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {capability}")
    head = ("K (hi x lo)", "grid", "batch", "schedule", "float ms/grid", "int_mm ms/grid", "numpy ms/grid")
    print("".join(f"{h:>16}" for h in head))
    for r in rows:
        split = f"{r['codebook_size']} ({r['split'][0]}x{r['split'][1]})"
        cells = (split, "x".join(map(str, r["grid"])), r["batch"], r["schedule"],
                 f"{r['torch_float_ms_per_grid']:.3f}", f"{r['torch_int_mm_ms_per_grid']:.3f}",
                 f"{r['reference_ms_per_grid']:.1f}")  # fmt: skip
        print("".join(f"{c:>16}" for c in cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, f, indent=2
            )


if __name__ == "__main__":
    main()
