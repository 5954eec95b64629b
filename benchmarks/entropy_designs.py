"""Prior designs for entropy coding, side by side on one VQ-VAE's codes with the same training budget.

Each design trains its own prior (``vqkit prior train`` with the design's ``model.*`` settings) in a
copy of the run folder, on the same training data and for the same minutes, and is scored on the same
val set:

  serial   the causal transformer: one network call per code position when decoding;
  2x2      grouped prior, 4 parallel steps on the 2 x 2 sub-lattices;
  4x4-8    grouped prior, 8 steps (4 x 4 Bayer order, two levels per step);
  4x4      grouped prior, 16 steps (4 x 4 Bayer order).

For each: val bits per code (float32 network, labels off, as the codec codes), held-out bits at the end
of training, steps trained, network calls to decode one grid of the val set's shape, and, for grouped
priors with an integer export, the integer network's val bits per code. Prints a table; writes JSON
(machine, command, date) to benchmarks/results/entropy_designs-DATE.json.

    .venv/bin/python benchmarks/entropy_designs.py --run benchmarks/runs/cifar10-dev --max-steps 1500
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import common
from vqkit.priors import load_prior, read_prior_doc, train_prior
from vqkit.priors.data import CodeSet, load_codes
from vqkit.priors.evaluate import grid_bits
from vqkit.priors.grouped import GroupedPrior
from vqkit.runs import Run

DESIGNS: dict[str, list[str]] = {
    "serial": [],
    "2x2": ["model.kind=grouped", "model.schedule=2x2"],
    "4x4-8": ["model.kind=grouped", "model.schedule=4x4-8"],
    "4x4": ["model.kind=grouped", "model.schedule=4x4"],
}
SKIPPED = ("train_state.pt", "metrics.jsonl", "run.lock", ".commit.json")  # training files of the VQ-VAE


def copy_run(run: Path, dest: Path) -> None:
    """The VQ-VAE's files (weights, config, cached codes) in a fresh folder for one design's prior."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in run.iterdir():
        if f.is_file() and f.name not in SKIPPED and not f.name.startswith("prior"):
            shutil.copy2(f, dest / f.name)


def integer_bits(run_dir: Path, codes: CodeSet) -> float | None:
    """Val bits per code of the grouped prior's integer network (ideal code length of its integer
    logits, hi then lo parts), when the run holds one."""
    try:
        from vqkit.priors.integer import IntegerPrior
        from vqkit.runs.layout import INTEGER_PRIOR_FILE
    except ImportError:
        return None
    path = run_dir / INTEGER_PRIOR_FILE
    if not path.is_file():
        return None
    prior = IntegerPrior.load(path)
    bits = [prior.nll_bits(torch.from_numpy(codes.indices[i : i + 500])) for i in range(0, len(codes), 500)]
    return float(torch.cat(bits).sum()) / codes.indices.size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a trained VQ-VAE run folder")
    p.add_argument("--minutes", type=float, help="training budget of each prior, in minutes")
    p.add_argument("--max-steps", type=int, help="training budget of each prior, in steps (the same work for "
                   "every design whatever else runs on the machine)")  # fmt: skip
    p.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    p.add_argument("--data", default=str(common.SHARED_DATA / "cifar10/train"), help="training images")
    p.add_argument("--val", default=str(common.SHARED_DATA / "cifar10/val"), help="val images")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra prior setting for every design (e.g. train.batch_size=128)")  # fmt: skip
    p.add_argument("--work", type=Path, default=common.ROOT / "benchmarks/runs/entropy_designs")
    p.add_argument("--keep", action="store_true",
                   help="reuse a design's prior already in --work instead of training it again")  # fmt: skip
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    when = datetime.now().astimezone()
    torch.set_num_threads(torch.get_num_threads())
    source = Run.load(a.run)
    for spec in (a.data, a.val):  # encoded once into the run folder; every design's copy reuses them
        load_codes(source, spec, progress=False)
    rows: list[dict[str, Any]] = []
    for design in a.designs:
        folder = a.work / design
        if a.keep and (folder / "prior_config.json").is_file():
            doc = read_prior_doc(folder)
            held = json.loads((folder / "prior_eval.json").read_text())["data"]
            summary = {"step": doc["step"], "eval": held}
            train_s = None
        else:
            copy_run(a.run, folder)
            t0 = time.perf_counter()
            summary = train_prior(folder, data_spec=a.data, time_budget_min=a.minutes, max_steps=a.max_steps,
                                  overrides=[*DESIGNS[design], *a.set], progress=False)  # fmt: skip
            train_s = time.perf_counter() - t0
        run, prior = Run.load(folder), load_prior(folder)
        codes = load_codes(run, a.val)
        plain = CodeSet(codes.indices, None, codes.class_names, codes.image_size)  # as the codec codes
        bits = float(grid_bits(prior, plain).mean()) / plain.indices[0].size
        h, w = plain.grid
        calls = prior.steps if isinstance(prior, GroupedPrior) else h * w
        row = {
            "design": design,
            "overrides": [*DESIGNS[design], *a.set],
            "parameters": sum(t.numel() for t in prior.parameters()),
            "steps_trained": summary["step"],
            "train_s": train_s,
            "heldout_bits_per_code": summary.get("eval", {}).get("nll_bits_per_code"),
            "val_bits_per_code": bits,
            "val_bits_per_code_integer": integer_bits(folder, plain),
            "network_calls_per_grid": calls,
            "grid": [h, w],
        }
        rows.append(row)
        print(f"{design}: {bits:.4f} bits/code on val after {summary['step']} steps", flush=True)
    serial = next((r["val_bits_per_code"] for r in rows if r["design"] == "serial"), None)
    budget = f"{a.minutes:g} min" if a.max_steps is None else f"{a.max_steps} steps"
    print(f"\nPriors on {a.run}'s codes, {budget} of training each, val {a.val}")
    print(f"{'design':8} {'params':>9} {'steps':>7} {'calls/grid':>10} {'val bits/code':>14} "
          f"{'integer':>8} {'vs serial':>9}")  # fmt: skip
    for r in rows:
        ratio = f"{r['val_bits_per_code'] / serial - 1:+.2%}" if serial else "-"
        integer = "-" if r["val_bits_per_code_integer"] is None else f"{r['val_bits_per_code_integer']:.4f}"
        print(f"{r['design']:8} {r['parameters']:>9,} {r['steps_trained']:>7} "
              f"{r['network_calls_per_grid']:>10} {r['val_bits_per_code']:>14.4f} {integer:>8} "
              f"{ratio:>9}")  # fmt: skip
    doc = {"benchmark": "entropy_designs", "date": when.isoformat(timespec="seconds"),
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": common.machine(),
           "run": str(a.run), "minutes": a.minutes, "max_steps": a.max_steps, "train": a.data, "val": a.val,
           "rows": rows,
           "val_images": len(np.asarray(plain.indices))}  # fmt: skip
    common.write_result(doc, "entropy_designs", when, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
