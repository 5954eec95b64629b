"""One residual VQ model as a rate ladder against single-rate models of the same rates and budget.

    python benchmarks/rvq_ladder.py --minutes 30                    # train everything, then compare
    python benchmarks/rvq_ladder.py --run RUN --minutes 30          # an existing ladder run
    python benchmarks/rvq_ladder.py --minutes 0.3 --max-train-images 2048 --max-val-images 64 \
        --max-kodak-images 2 --out /tmp/ladder.json             # a smoke run

The ladder is recipes/cifar10-rvq-ladder.json: 4 stages of K=512 on 8x8 latents, trained with
quantizer dropout, so `vqkit compress --stages n` codes n x 9 bits per position. Each rate n gets a
single-rate model trained for the same --minutes on the same data with the same networks: n = 1 the
vq recipe (recipes/cifar10.json), n >= 2 residual VQ of n stages without quantizer dropout (every
step trains the full rate only). Every model is coded with its static entropy model (fitted on its
training images when training ends) on CIFAR-10 val (lossless 32x32) and on Kodak photos; the table
gives the actual bits per pixel (file bytes) and PSNR of the ladder at n stages beside the single-rate
model of that rate, and the gap (ladder - single-rate, dB). Writes benchmarks/results/rvq_ladder-DATE.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, SHARED_DATA, machine, write_result
from vqkit.codec import Coding, compress_images
from vqkit.codec.files import read_inputs
from vqkit.config import RunConfig, load_config
from vqkit.pipeline import train
from vqkit.runs import Run

LADDER = ROOT / "recipes" / "cifar10-rvq-ladder.json"
SINGLE_VQ = ROOT / "recipes" / "cifar10.json"
STAGES = 4


def single_rate_config(n: int, base: RunConfig) -> RunConfig:
    """The single-rate model of n stages: vq for n = 1, else rvq of n stages without dropout."""
    if n == 1:
        return load_config(SINGLE_VQ)
    q = dataclasses.replace(base.model.quantizer, stages=n, stage_dropout=0.0)
    return dataclasses.replace(base, model=dataclasses.replace(base.model, quantizer=q))


def trained(cfg: RunConfig, run_dir: Path, a: argparse.Namespace) -> Path:
    """Train ``cfg`` for --minutes on --train into ``run_dir`` unless it holds a finished run."""
    if (run_dir / "model.safetensors").exists():
        print(f"using {run_dir}", flush=True)
        return run_dir
    data = dataclasses.replace(cfg.data, spec=a.train, max_images=a.max_train_images)
    tc = dataclasses.replace(cfg.train, time_budget_min=a.minutes, device=a.device)
    cfg = dataclasses.replace(cfg, data=data, train=tc)
    print(f"training {run_dir.name} for {a.minutes:g} min", flush=True)
    train(cfg, run_dir, progress=False)
    return run_dir


def measure(coding: Coding, images: list[np.ndarray], stages: int | None) -> dict[str, float]:
    """Mean actual bpp and PSNR of ``images`` coded one file each with the static model."""
    t = time.perf_counter()
    result = compress_images(coding, images, entropy_model="static", stages=stages)
    s = result.summary()
    return {"bpp_actual": s["bpp_actual"], "bpp_nominal": s["bpp_nominal"], "psnr": s["psnr"],
            "seconds": time.perf_counter() - t}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="training budget of every model (default 30)")
    p.add_argument("--run", type=Path, help="an existing ladder run (default: train one)")
    p.add_argument("--train", default=str(SHARED_DATA / "cifar10" / "train"), help="training data spec")
    p.add_argument("--val", default=str(SHARED_DATA / "cifar10" / "val"), help="CIFAR-10 images to code")
    p.add_argument("--kodak", default=str(SHARED_DATA / "kodak"), help="photos to code")
    p.add_argument("--max-train-images", type=int, help="train on the first N images")
    p.add_argument("--max-val-images", type=int, help="code the first N CIFAR-10 images")
    p.add_argument("--max-kodak-images", type=int, help="code the first N photos")
    p.add_argument("--device", default="auto", help="training device (default auto)")
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "rvq_ladder",
                   help="where the runs go (git-ignored); finished runs there are reused")  # fmt: skip
    p.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/rvq_ladder-DATE.json)")
    a = p.parse_args(argv)
    when = datetime.now()
    base = load_config(LADDER)
    ladder = a.run or trained(base, a.work / "ladder", a)
    singles = {
        n: trained(single_rate_config(n, base), a.work / f"single-{n}", a) for n in range(1, STAGES + 1)
    }
    sets = {
        "cifar10-val": read_inputs([a.val], a.max_val_images, strict=True)[0],
        "kodak": read_inputs([a.kodak], a.max_kodak_images, strict=True)[0],
    }
    ladder_coding = Coding(Run.load(ladder))
    if ladder_coding.stages != STAGES:
        raise SystemExit(f"{ladder} has {ladder_coding.stages} stages; the ladder has {STAGES}")
    rows: list[dict[str, Any]] = []
    for n in range(1, STAGES + 1):
        single_coding = Coding(Run.load(singles[n]))
        for name, images in sets.items():
            lad = measure(ladder_coding, images, n)
            one = measure(single_coding, images, None)
            rows.append({"stages": n, "data": name, "images": len(images), "ladder": lad, "single": one,
                         "gap_db": lad["psnr"] - one["psnr"]})  # fmt: skip
            print(f"  {n} stages, {name}: ladder {lad['bpp_actual']:.3f} bpp {lad['psnr']:.2f} dB, "
                  f"single-rate {one['bpp_actual']:.3f} bpp {one['psnr']:.2f} dB", flush=True)  # fmt: skip
    head = ("stages", "data", "ladder bpp", "PSNR", "single bpp", "PSNR", "gap dB")
    print("\n{:>6} {:<12} {:>10} {:>6} {:>10} {:>6} {:>7}".format(*head))
    for r in rows:
        lad, one = r["ladder"], r["single"]
        print(f"{r['stages']:>6} {r['data']:<12} {lad['bpp_actual']:>10.3f} {lad['psnr']:>6.2f} "
              f"{one['bpp_actual']:>10.3f} {one['psnr']:>6.2f} {r['gap_db']:>+7.2f}")  # fmt: skip
    doc = {"benchmark": "rvq_ladder", "date": when.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": machine(), "minutes": a.minutes,
           "ladder_run": str(ladder), "single_runs": {str(n): str(r) for n, r in singles.items()},
           "rows": rows}  # fmt: skip
    write_result(doc, "rvq_ladder", when, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
