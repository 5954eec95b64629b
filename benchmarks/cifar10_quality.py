"""CIFAR-10 quality bar: train recipes/cifar10.json for a wall-clock budget, evaluate on the lossless
validation images, and record PSNR against training minutes.

    python benchmarks/cifar10_quality.py --budget 30 [--set key=value ...] [--tag NAME]

Prints a table and writes benchmarks/results/cifar10_quality-<tag>-<date>.json with the machine,
the command, the curve and the final evaluation (psnr, ssim, codebook usage, perplexity, dead codes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from common import ROOT, SHARED_DATA, machine
from vqkit.config import load_config
from vqkit.data import load_dataset
from vqkit.pipeline import train
from vqkit.runs import load_model, load_run_config
from vqkit.training import evaluate
from vqkit.training.loop import override_for_resume

SHARED = SHARED_DATA / "cifar10"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--budget", type=float, default=30.0, help="training minutes")
    p.add_argument("--train", default=str(SHARED / "train"))
    p.add_argument("--val", default=str(SHARED / "val"))
    p.add_argument("--config", default=str(ROOT / "recipes" / "cifar10.json"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "cifar10")
    p.add_argument("--curve-images", type=int, default=1000, help="val images per curve point")
    p.add_argument("--tag", default="default")
    p.add_argument(
        "--continue-from",
        type=Path,
        metavar="RUN",
        help="copy a finished run and continue it to --budget minutes in total (vqkit train --resume: "
        "the cosine schedule restarts from where the longer horizon puts it)",
    )
    a = p.parse_args()

    t0 = time.perf_counter()
    train_set = load_dataset(a.train, progress=True)
    val = load_dataset(a.val)
    load_s = time.perf_counter() - t0
    overrides = [
        *a.overrides,
        f"train.time_budget_min={a.budget}",
        f"data.spec={a.train}",
        f"data.eval_spec={a.val}",
        f"train.eval_images={a.curve_images}",
    ]
    run_dir = a.out / a.tag
    if a.continue_from:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(a.continue_from, run_dir)
        cfg = override_for_resume(load_run_config(run_dir), time_budget_min=a.budget)
        result = train(cfg, run_dir, resume=True, data=train_set, progress=sys.stderr.isatty())
    else:
        cfg = load_config(a.config, overrides)
        for f in ("model.safetensors", "train_state.pt"):
            (run_dir / f).unlink(missing_ok=True)
        result = train(cfg, run_dir, data=train_set, progress=sys.stderr.isatty())

    model = load_model(run_dir)
    t1 = time.perf_counter()
    final = evaluate(model, val.images, batch_size=500)
    eval_s = time.perf_counter() - t1

    records = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [
        {"minutes": r["elapsed_s"] / 60, "step": r["step"], "psnr": r["psnr"],
         "codebook_usage": r.get("codebook_usage"), "perplexity": r.get("perplexity")}
        for r in records if r["type"] == "eval"
    ]  # fmt: skip
    speeds = [r["images_per_s"] for r in records if r["type"] == "train"]
    doc = {
        "benchmark": "cifar10_quality",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "config": json.loads((run_dir / "config.json").read_text())["config"],
        "budget_min": a.budget,
        "continued_from": str(a.continue_from) if a.continue_from else None,
        "steps": result.step,
        "train_images": len(train_set),
        "val_images": len(val),
        "data_load_s": load_s,
        "median_train_images_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,
        "curve_on_val_subset": curve,
        "final_val": final,
        "final_eval_s": eval_s,
        "targets": {"psnr": 25.0, "codebook_usage": 0.95, "perplexity": 400},
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    path = out / f"cifar10_quality-{a.tag}-{stamp}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")

    print(f"\n{'minutes':>8} {'step':>7} {'psnr':>7} {'usage':>6} {'perplexity':>10}")
    for c in curve:
        print(
            f"{c['minutes']:8.1f} {c['step']:7d} {c['psnr']:7.2f} "
            f"{c['codebook_usage'] or 0:6.3f} {c['perplexity'] or 0:10.1f}"
        )
    print(
        f"\nfinal on {len(val)} val images: psnr {final['psnr']:.2f} dB, ssim {final['ssim']:.4f}, "
        f"usage {final['codebook_usage']:.3f}, perplexity {final['perplexity']:.1f}, "
        f"dead {final['dead_codes']}; train {doc['median_train_images_per_s']:.0f} img/s"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
