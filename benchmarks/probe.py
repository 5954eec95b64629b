"""Do discrete codes keep class information? Probe accuracy of a VQ-VAE against the same networks with
quantization off, on CIFAR-10 (classifiers fit on train, scored on the lossless val folder).

    python benchmarks/probe.py --budget 30                       # train both runs for 30 minutes each
    python benchmarks/probe.py --vq-run RUN [--ae-run RUN]       # reuse trained runs

Runs: recipes/cifar10.json (VQ) and recipes/cifar10-ae.json (the same recipe, quantizer.enabled=false),
each trained for --budget minutes unless given. Features (vqkit.tasks.probe): the VQ run's code
histograms and pooled latents, the autoencoder's pooled latents, and raw pixels (area-downsampled to
--pixel-size) as the baseline; each scored by a linear probe (logistic regression on standardised
features) and k-NN (cosine). Reconstruction PSNR/SSIM of both runs on val sit beside them.
Writes benchmarks/results/probe-<date>.json and each run's probe.json (for `vqkit report`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from cifar10_quality import SHARED, machine  # noqa: E402
from vqkit.config import load_config  # noqa: E402
from vqkit.data import ImageSet, load_dataset  # noqa: E402
from vqkit.pipeline import train  # noqa: E402
from vqkit.runs import Run, layout  # noqa: E402
from vqkit.runs.results import write_result  # noqa: E402
from vqkit.tasks.probe import ProbeSettings, run_probes  # noqa: E402
from vqkit.training import evaluate  # noqa: E402


def train_recipe(recipe: Path, out: Path, train_set: ImageSet, a: argparse.Namespace) -> Path:
    overrides = [
        f"data.spec={a.train}",
        f"data.eval_spec={a.val}",
        f"train.time_budget_min={a.budget}",
        "train.eval_images=1000",
        *a.overrides,
    ]
    cfg = load_config(recipe, overrides)
    for f in ("model.safetensors", "train_state.pt"):
        (out / f).unlink(missing_ok=True)
    train(cfg, out, data=train_set, progress=sys.stderr.isatty())
    return out


def score_run(
    run_dir: Path, train_set: ImageSet, val: ImageSet, settings: ProbeSettings, device: str
) -> dict[str, Any]:
    run = Run.load(run_dir, device)
    t = time.perf_counter()
    probes = run_probes(run, train_set, val, settings, pixels=False)
    probe_s = time.perf_counter() - t
    quality = evaluate(run.model, val.images, batch_size=500, device=run.device)
    return {
        "run": str(run_dir),
        "quantized": run.model.config.quantizer.enabled,
        "probe_s": probe_s,
        "reconstruction": {k: quality[k] for k in ("psnr", "ssim", "mse") if k in quality},
        **probes,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--vq-run", type=Path, help="trained VQ run (default: train recipes/cifar10.json)")
    p.add_argument("--ae-run", type=Path, help="trained autoencoder run (default: train cifar10-ae.json)")
    p.add_argument("--budget", type=float, default=30.0, help="training minutes per trained run")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override (both)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs", help="where trained runs go")
    p.add_argument("--train", default=str(SHARED / "train"))
    p.add_argument("--val", default=str(SHARED / "val"))
    p.add_argument("--max-train", type=int, help="random subset of training images for the classifiers")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--pixel-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    train_set, val = load_dataset(a.train, progress=True), load_dataset(a.val)
    vq_dir = a.vq_run or train_recipe(
        ROOT / "recipes" / "cifar10.json", a.out / "cifar10-probe-vq", train_set, a
    )
    ae_dir = a.ae_run or train_recipe(
        ROOT / "recipes" / "cifar10-ae.json", a.out / "cifar10-ae", train_set, a
    )
    settings = ProbeSettings(k=a.k, max_train=a.max_train, pixel_size=a.pixel_size, seed=a.seed)
    t = time.perf_counter()
    pixels = run_probes(None, train_set, val, settings)
    pixel_s = time.perf_counter() - t
    runs = {
        "vq": score_run(vq_dir, train_set, val, settings, device),
        "ae": score_run(ae_dir, train_set, val, settings, device),
    }
    for r in runs.values():  # each run's folder gets its probe, with the shared pixel baseline
        doc = {k: v for k, v in r.items() if k not in ("run", "quantized", "probe_s", "reconstruction")}
        doc["results"] = {**doc["results"], "pixels": pixels["results"]["pixels"]}
        write_result(r["run"], layout.PROBE_FILE, "probe", {"train": a.train, "test": a.val, **doc})

    result = {
        "benchmark": "probe",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "settings": dataclasses.asdict(settings),
        "train": a.train,
        "val": a.val,
        "budget_min": None if a.vq_run and a.ae_run else a.budget,
        "pixels": {**pixels["results"]["pixels"], "seconds": pixel_s},
        "chance": pixels["chance"],
        "runs": runs,
    }
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"probe-{datetime.now(UTC).strftime('%Y%m%d-%H%M')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'features':<22} {'dims':>6} {'linear':>8} {'k-NN':>8}   reconstruction")
    for name, r in runs.items():
        rec = r["reconstruction"]
        for kind, s in r["results"].items():
            print(
                f"{name + ' ' + kind:<22} {s['dims']:>6d} {s['linear']:>8.4f} {s['knn']:>8.4f}   "
                f"{rec['psnr']:.2f} dB, SSIM {rec.get('ssim', float('nan')):.4f}"
            )
    px = result["pixels"]
    print(f"{'pixels':<22} {px['dims']:>6d} {px['linear']:>8.4f} {px['knn']:>8.4f}")
    print(f"{'chance':<22} {'':>6} {result['chance']:>8.4f} {result['chance']:>8.4f}")
    print(f"({pixels['num_train']} training, {pixels['num_test']} test images); wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
