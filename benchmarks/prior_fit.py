"""How well saved priors fit, and how much they memorise: NLL on their own training grids, on the grids
held out from training, and on a separate val set, side by side.

For each run folder the prior's own data spec, holdout share and seed (from prior_config.json) rebuild
the exact training / held-out split; every figure is evaluated in float32 with dropout off, with class
labels where the prior and data have them. A training NLL far below the held-out one means the prior
memorises its grids (more grids, e.g. ``train.augment``, then help). A calibrated prior (logit scale
fitted on the held-out grids, so its held-out figure is no longer independent) is scored as saved, and
its val NLL with the raw logits is given beside it. Prints a table; writes JSON
(machine, command, date) to benchmarks/results/prior_fit-DATE.json.

    .venv/bin/python benchmarks/prior_fit.py --runs benchmarks/runs/cifar10/budget60 \\
        benchmarks/runs/cifar10/budget60-aug
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import common
from vqkit.priors.checkpoint import load_prior, read_prior_doc
from vqkit.priors.data import CodeSet, load_codes
from vqkit.priors.evaluate import grid_bits
from vqkit.priors.model import CodePrior
from vqkit.priors.train import saved_split
from vqkit.runs import Run


def bits_per_code(prior: CodePrior, codes: CodeSet) -> float:
    """Mean NLL of ``codes`` under ``prior`` (dropout off, float32), in bits per code."""
    return float(grid_bits(prior, codes).mean()) / prior.config.length


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders holding a prior")
    p.add_argument("--val", default=str(common.SHARED_DATA / "cifar10/val"), help="data spec of the val set")
    p.add_argument("--train-grids", type=int, default=2300, help="training grids scored (the first N)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for run_dir in a.runs:
        run, doc, prior = Run.load(run_dir), read_prior_doc(run_dir), load_prior(run_dir)
        codes, train_idx, held_idx = saved_split(run, doc)
        row = {
            "run": str(run_dir),
            "step": doc.get("step"),
            "init_from": doc.get("init_from"),
            "augment": doc["train"].get("augment", 0),
            "num_train": doc["data"]["num_train"],
            "num_augmented": doc["data"].get("num_augmented", 0),
            "train_bits_per_code": bits_per_code(prior, codes.subset(train_idx[: a.train_grids])),
            "heldout_bits_per_code": bits_per_code(prior, codes.subset(held_idx)),
            "val_bits_per_code": bits_per_code(prior, load_codes(run, a.val)),
            "log2_codebook_size": math.log2(prior.config.codebook_size),
        }
        scale = float(prior.logit_scale)
        row["logit_scale"] = scale  # 1: uncalibrated; else fitted on the held-out grids (prior calibrate)
        if scale != 1.0:
            prior.logit_scale.fill_(1.0)
            row["val_bits_per_code_raw"] = bits_per_code(prior, load_codes(run, a.val))
            prior.logit_scale.fill_(scale)
        row["memorisation_gap"] = row["heldout_bits_per_code"] - row["train_bits_per_code"]
        row["val_percent_below_log2k"] = 100 * (1 - row["val_bits_per_code"] / row["log2_codebook_size"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    now = datetime.now()
    out_doc = {"benchmark": "prior_fit", "date": now.isoformat(timespec="seconds"),
               "command": [sys.executable, *sys.argv], "machine": common.machine(), "val": a.val,
               "train_grids": a.train_grids, "rows": rows}  # fmt: skip
    print("\n| run | augment | logit scale | train | held-out | gap | val (raw) | val | below log2 K |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        raw = r.get("val_bits_per_code_raw", r["val_bits_per_code"])
        figures = [r["train_bits_per_code"], r["heldout_bits_per_code"], r["memorisation_gap"], raw,
                   r["val_bits_per_code"]]  # fmt: skip
        cells = " | ".join(f"{x:.3f}" for x in figures)
        print(f"| {Path(r['run']).name} | {r['augment']} | {r['logit_scale']:.4f} | {cells} | "
              f"{r['val_percent_below_log2k']:.1f} % |")  # fmt: skip
    common.write_result(out_doc, "prior_fit", now, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
