"""Train the rate-distortion operating points (recipes/rd-*.json) for benchmarks/rate_distortion.py.

For each recipe: train the VQ-VAE on CIFAR-10 `train` for the recipe's time budget into
benchmarks/runs/rd/<recipe name>, fit its static code-frequency model on the same training images, and
(unless --prior-budget 0) train its autoregressive prior. Finished steps are skipped on a rerun, so an
interrupted job continues where it stopped.

    .venv/bin/python benchmarks/train_operating_points.py                  # every recipe, as designed
    .venv/bin/python benchmarks/train_operating_points.py --only rd-f4-k64 --device cuda
    # a smoke test: a few steps on a few images
    .venv/bin/python benchmarks/train_operating_points.py --max-steps 2 --max-images 64 \
        --prior-max-steps 2 --out /tmp/rd-smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vqkit.cli import main as vqkit
from vqkit.codec import STATIC_TABLE_FILE, fit_static_model
from vqkit.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10" / "train"


def _call(argv: list[str]) -> None:
    print("+ vqkit " + " ".join(argv), flush=True)
    code = vqkit(argv)
    if code != 0:
        raise SystemExit(f"vqkit {argv[0]} failed with status {code}")


def subset(data: Path, max_images: int, out: Path) -> Path:
    """The first ``max_images`` training images (and labels) as an .npz, for smoke tests."""
    path = out / f"train_subset_{max_images}.npz"
    if not path.exists():
        images = load_dataset(data, max_images=max_images)
        out.mkdir(parents=True, exist_ok=True)
        labels = {} if images.labels is None else {"labels": images.labels}
        np.savez(path, images=np.stack(images.images), **labels)  # type: ignore[arg-type]
    return path


def train_point(recipe: Path, run: Path, data: Path, a: argparse.Namespace) -> dict[str, object]:
    started = time.time()
    stop = ["--max-steps", str(a.max_steps)] if a.max_steps else []
    if a.time_budget is not None:
        stop = ["--time-budget", str(a.time_budget)]
    if not (run / "model.safetensors").exists():
        argv = ["train", "--config", str(recipe), "--data", str(data), "--out", str(run), "--no-progress"]
        _call(argv + stop + (["--device", a.device] if a.device else []))
    if not (run / STATIC_TABLE_FILE).exists():
        print(f"+ fit_static_model({run}, {data})", flush=True)
        fit_static_model(run, str(data), device=a.device or "cpu")
    if (a.prior_budget or a.prior_max_steps) and not (run / "prior.safetensors").exists():
        argv = ["prior", "train", str(run), "--data", str(data), "--no-progress"]
        if a.prior_max_steps:
            argv += ["--max-steps", str(a.prior_max_steps)]
        else:
            argv += ["--time-budget", str(a.prior_budget)]
        _call(argv)
    return {"recipe": recipe.name, "run": str(run), "seconds": round(time.time() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="*", type=Path, help="recipe files (default: recipes/rd-*.json)")
    p.add_argument("--only", nargs="*", default=[], help="recipe names (file stems) to train")
    p.add_argument("--data", type=Path, default=DATA, help="training images (default: CIFAR-10 train)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "rd")
    p.add_argument("--device", help="cpu, cuda or auto (default: the recipe's, auto)")
    p.add_argument("--time-budget", type=float, metavar="MIN", help="override every recipe's budget")
    p.add_argument("--max-steps", type=int, help="stop each VQ-VAE after this many steps (smoke tests)")
    p.add_argument("--max-images", type=int, help="use only the first N training images (smoke tests)")
    p.add_argument("--prior-budget", type=float, default=10.0, metavar="MIN",
                   help="minutes of prior training per run; 0 skips the prior (default 10)")  # fmt: skip
    p.add_argument("--prior-max-steps", type=int, help="prior steps instead of a budget (smoke tests)")
    a = p.parse_args(argv)
    recipes = sorted(a.recipes or (ROOT / "recipes").glob("rd-*.json"))
    if a.only:
        recipes = [r for r in recipes if r.stem in set(a.only)]
    if not recipes:
        p.error("no recipes selected")
    if not a.data.exists():
        p.error(f"training data not found: {a.data}")
    data = subset(a.data, a.max_images, a.out) if a.max_images else a.data
    log = [train_point(recipe, a.out / recipe.stem, data, a) for recipe in recipes]
    (a.out / "operating_points.json").write_text(
        json.dumps({"argv": sys.argv, "points": log}, indent=2) + "\n"
    )
    print(f"trained {len(log)} operating points into {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
