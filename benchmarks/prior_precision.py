"""Prior training in float32 against bf16 autocast: speed and held-out likelihood, same run, same seed.

Trains the same CodePrior (from the same initial weights, on the same batches) for the same number of
steps once per precision on a run's cached training codes, then scores each on the CIFAR-10 val codes
(float32 evaluation). Prints a table; writes JSON (machine, command, date) to
benchmarks/results/prior_precision-DATE.json.

    .venv/bin/python benchmarks/prior_precision.py --run benchmarks/runs/cifar10/budget60 --steps 150
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

import common
from vqkit.priors import CodePrior, PriorConfig
from vqkit.priors.config import PriorTrainConfig
from vqkit.priors.data import load_codes
from vqkit.priors.evaluate import grid_bits
from vqkit.priors.fit import fit_prior
from vqkit.runs import Run
from vqkit.training.schedule import Horizon


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=common.ROOT / "benchmarks/runs/cifar10/budget60")
    p.add_argument("--train", default=str(common.SHARED_DATA / "cifar10/train"))
    p.add_argument("--val", default=str(common.SHARED_DATA / "cifar10/val"))
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-grids", type=int, default=2000)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    run = Run.load(a.run)
    train, val = load_codes(run, a.train), load_codes(run, a.val)
    val = val.subset(torch.arange(min(len(val), a.val_grids)).numpy())
    config = PriorConfig(
        codebook_size=run.model.codebook_size, grid=train.grid, num_classes=train.num_classes
    )
    rows = []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        prior = CodePrior(config)
        cfg = PriorTrainConfig(batch_size=a.batch_size, precision=precision, log_every=10**9,
                               eval_every=10**9, checkpoint_every=10**9)  # fmt: skip
        t = time.perf_counter()
        fit_prior(prior, train, cfg, Horizon(max_steps=a.steps, budget_s=None), progress=False)
        seconds = time.perf_counter() - t
        bits = float(grid_bits(prior.eval(), val).mean()) / config.length
        rows.append({"precision": precision, "steps": a.steps, "seconds": seconds,
                     "grids_per_s": a.steps * a.batch_size / seconds, "val_bits_per_code": bits})  # fmt: skip
        print(f"{precision}: {rows[-1]['grids_per_s']:.1f} grids/s, val {bits:.4f} bits/code", flush=True)
    now = datetime.now()
    doc = {"benchmark": "prior_precision", "date": now.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": common.machine(), "run": str(a.run),
           "prior_config": config.__dict__ | {"grid": list(config.grid)}, "batch_size": a.batch_size,
           "val_grids": len(val), "rows": rows,
           "speedup_bf16": rows[1]["grids_per_s"] / rows[0]["grids_per_s"]}  # fmt: skip
    print("\n| precision | grids/s | val bits/code |\n|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['grids_per_s']:.1f} | {r['val_bits_per_code']:.4f} |")
    print(f"bf16 / fp32 speed: {doc['speedup_bf16']:.2f}x")
    common.write_result(doc, "prior_precision", now, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
