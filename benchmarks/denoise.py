"""Gaussian denoising: a blind vqkit denoiser against classical methods, on CIFAR-10 val and Kodak crops.

    python benchmarks/denoise.py --budget 60                 # train recipes/denoise-cifar10.json, then score
    python benchmarks/denoise.py --run benchmarks/runs/denoise-cifar10   # score an existing run

At each sigma (default 15, 25, 50 on the 0-255 scale) every method gets the same noisy images: clean +
Gaussian noise, clamped and rounded to 8 bits (what a user has on disk), seeded per image. Scores are
PSNR and SSIM of 8-bit outputs against the clean images (vqkit.metrics), on
  cifar10-val   the first --val-images of a seeded shuffle of the lossless val folder (32x32)
  kodak-crops   --kodak-crops random --crop x --crop crops of the Kodak photos (seed --seed)
Methods: noisy input; denoised (the vqkit run's reconstruction); scikit-image denoise_nl_means (fast mode,
5x5 patches, 13x13 search, sigma given, h = a * sigma), denoise_wavelet (BayesShrink, soft, YCbCr,
sigma given), denoise_tv_chambolle (weight = b * sigma); BM3D (bm3d package, CBM3D for colour,
sigma_psd = sigma / 255). The factors a and b are tuned per sigma and image set on separate
calibration images (the next val images of the shuffle; Kodak crops of another seed), best PSNR wins.
Writes benchmarks/results/denoise-<date>.json (machine, command, date, parameters, timings) and,
for `vqkit report`, denoise.json and denoise_examples.png in the run folder.
Needs the bench extra (bm3d); --methods drops any method.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from cifar10_quality import SHARED, machine  # noqa: E402
from vqkit.config import load_config  # noqa: E402
from vqkit.data import ImageSet, load_dataset  # noqa: E402
from vqkit.pipeline import train  # noqa: E402
from vqkit.runs import Run, layout  # noqa: E402
from vqkit.runs.results import write_result  # noqa: E402
from vqkit.tasks.denoise import add_noise, denoise_images, quality, save_examples  # noqa: E402

KODAK = SHARED.parent / "kodak"
CLASSICAL = ("nl_means", "wavelet", "tv", "bm3d")
TUNED = {"nl_means": (0.4, 0.6, 0.8, 1.0, 1.2), "tv": (0.3, 0.5, 0.7, 1.0, 1.4, 2.0)}


def classical(method: str, image: np.ndarray, sigma: float, factor: float) -> np.ndarray:
    """One (H, W, C) uint8 noisy image -> uint8 estimate; sigma on the 0-255 scale."""
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, denoise_wavelet

    x = image.astype(np.float64) / 255.0
    s = sigma / 255.0
    colour = x.shape[2] == 3
    if method == "nl_means":
        y = denoise_nl_means(
            x, h=factor * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=-1
        )
    elif method == "wavelet":
        y = denoise_wavelet(
            x,
            sigma=s,
            method="BayesShrink",
            mode="soft",
            rescale_sigma=True,
            convert2ycbcr=colour,
            channel_axis=-1,
        )
    elif method == "tv":
        y = denoise_tv_chambolle(x, weight=factor * s, channel_axis=-1)
    elif method == "bm3d":
        import bm3d

        y = bm3d.bm3d_rgb(x, sigma_psd=s) if colour else bm3d.bm3d(x[..., 0], sigma_psd=s)[..., None]
    else:
        raise ValueError(method)
    return (np.clip(y, 0, 1) * 255).round().astype(np.uint8).reshape(image.shape)


def _job(args: tuple[str, np.ndarray, float, float]) -> np.ndarray:
    return classical(*args)


def apply_all(
    method: str, noisy: list[np.ndarray], sigma: float, factor: float, workers: int
) -> list[np.ndarray]:
    jobs = [(method, im, sigma, factor) for im in noisy]
    if workers <= 1:
        return [_job(j) for j in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def tune(method: str, clean: list[np.ndarray], sigma: float, workers: int, seed: int) -> float:
    """The factor with the best mean PSNR on the calibration images (1.0 for untuned methods)."""
    if method not in TUNED:
        return 1.0
    noisy = add_noise(clean, f"gaussian:{sigma}", seed)
    scores = {f: quality(clean, apply_all(method, noisy, sigma, f, workers))["psnr"] for f in TUNED[method]}
    return max(scores, key=lambda f: scores[f])


def image_sets(a: argparse.Namespace, channels: int) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """name -> (evaluation images, calibration images)."""
    sets = {}
    if a.val_images > 0:
        val = load_dataset(a.val, channels=channels)
        order = np.random.default_rng(a.seed).permutation(len(val))
        pick, cpick = order[: a.val_images], order[a.val_images : a.val_images + a.calibration_images]
        sets["cifar10-val"] = ([val.images[i] for i in pick], [val.images[i] for i in cpick])
    if a.kodak_crops > 0:
        kodak = load_dataset(a.kodak, channels=channels)
        sets["kodak-crops"] = (
            _crops(kodak, a.crop, a.kodak_crops, a.seed),
            _crops(kodak, a.crop, a.calibration_images, a.seed + 1000),
        )
    return sets


def _crops(data: ImageSet, size: int, count: int, seed: int) -> list[np.ndarray]:
    per_image = -(-count // len(data))
    crops = data.patches(size, per_image=per_image, seed=seed)
    return list(crops[np.sort(np.random.default_rng(seed).permutation(len(crops))[:count])])


def train_run(a: argparse.Namespace) -> Path:
    overrides = [
        *a.overrides,
        f"data.spec={a.train}",
        f"data.eval_spec={a.val}",
        f"train.time_budget_min={a.budget}",
        "train.eval_images=1000",
    ]
    if a.max_train_images:
        overrides.append(f"data.max_images={a.max_train_images}")
    cfg = load_config(a.config, overrides)
    data = load_dataset(a.train, max_images=a.max_train_images, progress=True)
    for f in ("model.safetensors", "train_state.pt"):
        (a.out / f).unlink(missing_ok=True)
    train(cfg, a.out, data=data, progress=sys.stderr.isatty())
    return Path(a.out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, help="score this run instead of training one")
    p.add_argument("--budget", type=float, default=60.0, help="training minutes (without --run)")
    p.add_argument("--config", default=str(ROOT / "recipes" / "denoise-cifar10.json"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "denoise-cifar10")
    p.add_argument("--max-train-images", type=int, help="train on the first N images (quick checks)")
    p.add_argument("--train", default=str(SHARED / "train"))
    p.add_argument("--val", default=str(SHARED / "val"))
    p.add_argument("--kodak", default=str(KODAK))
    p.add_argument("--val-images", type=int, default=500, help="CIFAR-10 val images scored (0: none)")
    p.add_argument("--kodak-crops", type=int, default=64, help="Kodak crops scored (0: none)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--calibration-images", type=int, default=16)
    p.add_argument("--sigmas", default="15,25,50")
    p.add_argument("--methods", default=",".join(CLASSICAL), help="classical methods to run")
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 16))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    a = p.parse_args()
    sigmas = [float(s) for s in a.sigmas.split(",")]
    methods = [m for m in a.methods.split(",") if m]
    if unknown := set(methods) - set(CLASSICAL):
        p.error(f"unknown methods {sorted(unknown)}; choose from {CLASSICAL}")

    run_dir = a.run or train_run(a)
    run = Run.load(run_dir, "cuda" if _cuda() else "cpu")
    rows: list[dict[str, Any]] = []
    params: dict[str, dict[str, float]] = {}
    ceiling: dict[str, dict[str, float]] = {}
    sets = image_sets(a, run.channels)
    for name, (clean, calib) in sets.items():
        ceiling[name] = quality(clean, denoise_images(run, clean))  # clean in: the run's detail ceiling
        for sigma in sigmas:
            noisy = add_noise(clean, f"gaussian:{sigma}", a.seed)
            row: dict[str, Any] = {"set": name, "sigma": sigma, "num_images": len(clean)}
            row["noisy"] = quality(clean, noisy)
            t = time.perf_counter()
            out = denoise_images(run, noisy)
            row["denoised"] = {
                **quality(clean, out),
                "seconds_per_image": (time.perf_counter() - t) / len(clean),
            }
            for m in methods:
                factor = tune(m, calib, sigma, a.workers, a.seed + 7)
                if m in TUNED:
                    params.setdefault(m, {})[f"{name}@{sigma:g}"] = factor
                t = time.perf_counter()
                out = apply_all(m, noisy, sigma, factor, a.workers)
                row[m] = {**quality(clean, out), "seconds_per_image": (time.perf_counter() - t) / len(clean)}
            rows.append(row)
            print(_row_text(row, ["noisy", "denoised", *methods]), flush=True)

    doc = {
        "benchmark": "denoise",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": {**machine(), "workers": a.workers},
        "run": str(run_dir),
        "run_config": json.loads((Path(run_dir) / "config.json").read_text())["config"],
        "noise": "clean + N(0, sigma^2) on the 0-255 scale, clamped, rounded to 8 bits; seed per image",
        "metrics": "PSNR (dB) and SSIM (7x7 window) of 8-bit outputs against the clean images",
        "tuned_factors": params,
        "tuning": "nl_means h = factor * sigma, tv weight = factor * sigma; best PSNR on calibration images",
        "seconds_per_image": f"wall time per image; classical methods in {a.workers} worker processes",
        "clean_input_ceiling": ceiling,
        "results": rows,
    }
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    path = out_dir / f"denoise{'-' + a.tag if a.tag else ''}-{stamp}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    run_doc = {k: v for k, v in doc.items() if k != "run_config"}
    write_result(run_dir, layout.DENOISE_FILE, "denoise", {**run_doc, "examples_sigma": 25.0})
    examples = next(iter(sets.values()))[0][:8]
    save_examples(run, examples, 25.0, Path(run_dir) / layout.DENOISE_EXAMPLES, seed=a.seed)
    print("clean-input ceiling: " + ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in ceiling.items()))
    print(f"wrote {path} and {Path(run_dir) / layout.DENOISE_FILE}")
    return 0


def _row_text(row: dict[str, Any], methods: list[str]) -> str:
    cells = "  ".join(f"{m} {row[m]['psnr']:.2f}/{row[m]['ssim']:.3f}" for m in methods)
    return f"{row['set']:<12} sigma {row['sigma']:>4g}  {cells}"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
