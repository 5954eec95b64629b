"""Prior quality: train a run's code prior for a wall-clock budget, then measure it.

    python benchmarks/prior_quality.py --run benchmarks/runs/cifar10/expA --budget 10

Reports, in one JSON file (benchmarks/results/prior_quality-<date>.json) and a printed table:
  - validation NLL in bits per code against the unigram entropy of the codes and log2 K
    (and the % below log2 K: what entropy coding with this prior saves over fixed-length indices);
  - sampling throughput (images/s for n=64 on this machine's cores);
  - a sample-quality proxy: the Fréchet distance on the penultimate features of a small classifier
    trained for --classifier-min minutes on the real training images, between the real validation
    images and (a) prior samples, (b) reconstructions of validation images, (c) real training images
    (the floor for this sample size); real FID too when --inception gives a TorchScript Inception.
Pictures beside the JSON: samples, one row per class (class-conditional priors) and completions.
``--compare RUN2`` measures RUN2's existing prior beside (its NLL, sampling speed and the Fréchet
distance of its samples, with the same feature networks, so the two distances compare), e.g. a
grouped prior against the serial prior of the same VQ-VAE:

    python benchmarks/prior_quality.py --run src/vqkit/zoo/models/cifar10 --reuse-prior --compare RUN2
The whole script takes about --budget + 5 minutes on CIFAR-10.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import ROOT, SHARED_DATA, machine
from sample_quality import (
    FeatureFn,
    extract_features,
    frechet_distance,
    load_inception,
    train_feature_net,
)
from vqkit.data import ImageSet, load_dataset
from vqkit.priors import evaluate_prior, load_codes, load_prior, train_prior
from vqkit.priors.model import CodePrior
from vqkit.runs import Run
from vqkit.visual import image_grid, save_png

SHARED = SHARED_DATA / "cifar10"


def cycled_labels(prior: CodePrior, n: int) -> torch.Tensor | None:
    k = prior.config.num_classes
    return torch.arange(n) % k if k else None


def sample_images(run: Run, prior: CodePrior, n: int, seed: int, labels: torch.Tensor | None) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, 500):  # bounded memory for the key/value caches
        part = None if labels is None else labels[start : start + 500]
        idx = prior.sample(min(500, n - start), labels=part, generator=generator)
        out.append(run.decode(idx.numpy()))
    return np.concatenate(out)


def throughput(run: Run, prior: CodePrior, n: int = 64) -> dict[str, float]:
    t0 = time.perf_counter()
    idx = prior.sample(n, generator=torch.Generator().manual_seed(1), labels=cycled_labels(prior, n))
    t1 = time.perf_counter()
    run.decode(idx.numpy())
    t2 = time.perf_counter()
    return {"n": n, "prior_images_per_s": n / (t1 - t0), "images_per_s": n / (t2 - t0)}


def pictures(run: Run, prior: CodePrior, val: ImageSet, stem: Path, names: list[str]) -> dict[str, str]:
    """Sample grid, class rows (conditional priors) and completions of 4 validation images."""
    out: dict[str, str] = {}
    scale = max(1, 64 // val.images[0].shape[0])
    samples = sample_images(run, prior, 64, seed=2, labels=cycled_labels(prior, 64))
    save_png(image_grid([list(samples[r * 8 : r * 8 + 8]) for r in range(8)]), f"{stem}-samples.png", scale)
    out["samples"] = f"{stem.name}-samples.png"
    k = prior.config.num_classes
    if k:
        labels = torch.arange(k).repeat_interleave(8)
        rows = sample_images(run, prior, 8 * k, seed=3, labels=labels)
        save_png(image_grid([list(rows[c * 8 : c * 8 + 8]) for c in range(k)]), f"{stem}-classes.png", scale)
        out["classes"] = f"{stem.name}-classes.png (rows: {', '.join(names or map(str, range(k)))})"
    h, w = prior.config.grid
    picks = np.random.default_rng(4).choice(len(val), 4, replace=False)
    lines = []
    for i in picks:
        image = val.images[int(i)]
        grid = run.encode([image])[0]
        prefix = torch.from_numpy(np.repeat(grid[None], 4, axis=0))
        idx = prior.sample(
            4, prefix=prefix, keep=(h // 2) * w, generator=torch.Generator().manual_seed(int(i))
        )
        lines.append([image, run.decode(grid[None])[0], *run.decode(idx.numpy())])
    save_png(image_grid(lines), f"{stem}-completion.png", scale)
    out["completion"] = (
        f"{stem.name}-completion.png (original | reconstruction | 4 completions of the bottom half)"
    )
    return out


def feature_extractors(a: argparse.Namespace, train: ImageSet) -> tuple[dict[str, FeatureFn], dict[str, Any]]:
    """The feature networks of the Fréchet distances (one classifier trained here, Inception when
    given), and what to record of them. One set serves every prior of a run, so their distances
    compare."""
    extractors: dict[str, FeatureFn] = {}
    info: dict[str, Any] = {}
    if train.labels is not None:
        net, stats = train_feature_net(train.as_array(), train.labels, minutes=a.classifier_min,
                                       progress=sys.stderr.isatty())  # fmt: skip
        extractors["classifier_fd"] = net.features
        info["classifier"] = stats
    else:
        info["classifier"] = "skipped: the training data has no labels"
    if a.inception:
        extractors["fid"] = load_inception(a.inception)
    return extractors, info


def sample_quality(
    a: argparse.Namespace,
    run: Run,
    prior: CodePrior,
    train: ImageSet,
    val: ImageSet,
    extractors: dict[str, FeatureFn],
    with_references: bool = True,
) -> dict[str, Any]:
    """Fréchet distances to the real validation images, on classifier (and Inception) features: of
    the prior's samples and (``with_references``) of reconstructions and real training images."""
    rng = np.random.default_rng(0)
    n = min(a.fid_samples, len(val), len(train))
    sets = {"samples": sample_images(run, prior, n, seed=5, labels=cycled_labels(prior, n))}
    if with_references:
        picks = rng.choice(len(val), n, False)
        sets["reconstructions"] = np.stack(run.reconstruct([val.images[int(i)] for i in picks]))
        sets["real_train"] = np.stack([train.images[int(i)] for i in rng.choice(len(train), n, False)])
    result: dict[str, Any] = {"num_images": n, "reference": f"{len(val)} real validation images"}
    for name, fn in extractors.items():
        reference = extract_features(fn, val.images)
        result[name] = {
            key: frechet_distance(extract_features(fn, imgs), reference) for key, imgs in sets.items()
        }
    return result


def compared(
    a: argparse.Namespace, train: ImageSet, val: ImageSet, extractors: dict[str, FeatureFn]
) -> dict[str, Any]:
    """The prior of ``--compare RUN`` measured as the main run's is, with the same feature networks."""
    run = Run.load(a.compare)
    prior = load_prior(a.compare)
    ev = evaluate_prior(prior, load_codes(run, a.val, data=val))
    quality = sample_quality(a, run, prior, train, val, extractors, with_references=False)
    config = json.loads((a.compare / "prior_config.json").read_text())
    return {"run": str(a.compare), "prior_config": config, "val": ev, "sampling": throughput(run, prior),
            "sample_quality": quality}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a trained VQ-VAE run folder")
    p.add_argument("--budget", type=float, default=10.0, help="prior training minutes (default 10)")
    p.add_argument(
        "--data", default=str(SHARED / "train"), help="training data (default: shared CIFAR train)"
    )
    p.add_argument("--val", default=str(SHARED / "val"), help="validation data (default: shared CIFAR val)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="prior setting, key=value")
    p.add_argument(
        "--classifier-min", type=float, default=2.0, help="minutes to train the feature classifier"
    )
    p.add_argument("--fid-samples", type=int, default=1000, help="images per set for the Fréchet distances")
    p.add_argument("--inception", type=Path, help="TorchScript Inception feature extractor for real FID")
    p.add_argument("--reuse-prior", action="store_true", help="measure the run's existing prior, no training")
    p.add_argument("--compare", type=Path,
                   help="a run whose existing prior is measured beside (same feature networks)")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = p.parse_args()

    t0 = time.perf_counter()
    run = Run.load(a.run)
    train = load_dataset(a.data, channels=run.channels, progress=sys.stderr.isatty())
    val = load_dataset(a.val, channels=run.channels)
    load_s = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "reused": True,
        "prior_config": json.loads((a.run / "prior_config.json").read_text()),
    }
    if not a.reuse_prior:
        summary = train_prior(a.run, data_spec=a.data, time_budget_min=a.budget, overrides=a.overrides,
                              progress=sys.stderr.isatty(), overwrite=True, data=train)  # fmt: skip
    prior = load_prior(a.run)
    codes = load_codes(run, a.val, data=val)
    t1 = time.perf_counter()
    ev = evaluate_prior(prior, codes)
    eval_s = time.perf_counter() - t1
    speed = throughput(run, prior)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    a.out.mkdir(parents=True, exist_ok=True)
    names = json.loads((a.run / "prior_config.json").read_text()).get("class_names") or []
    pics = pictures(run, prior, val, a.out / f"prior_quality-{stamp}", names)
    extractors, feature_info = feature_extractors(a, train)
    quality = {**sample_quality(a, run, prior, train, val, extractors), **feature_info}
    log = a.run / "prior_metrics.jsonl"  # a shipped model's folder has none
    metrics = [json.loads(ln) for ln in log.read_text().splitlines() if ln] if log.is_file() else []
    doc = {
        "benchmark": "prior_quality",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "run": str(a.run),
        "budget_min": None if a.reuse_prior else a.budget,  # a reused prior: see its prior_config.json
        "train_data": a.data,
        "val_data": a.val,
        "data_load_s": load_s,
        "training": summary,
        "curve": [r for r in metrics if r["type"] == "eval"],
        "val": ev,
        "val_eval_s": eval_s,
        "sampling": speed,
        "sample_quality": quality,
        "pictures": pics,
    }
    if a.compare is not None:
        doc["compared"] = compared(a, train, val, extractors)
    doc["total_s"] = time.perf_counter() - t0
    path = a.out / f"prior_quality-{stamp}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    report(doc, path)
    return 0


def report(doc: dict[str, Any], path: Path) -> None:
    ev, q = doc["val"], doc["sample_quality"]
    rows = [
        ("validation grids", f"{ev['num_grids']}"),
        ("prior NLL (bits/code)", f"{ev['nll_bits_per_code']:.4f}"),
        ("unigram entropy (bits/code)", f"{ev['unigram_entropy_bits_per_code']:.4f}"),
        ("log2 K (bits/code)", f"{ev['log2_codebook_size']:.4f}"),
        ("below log2 K", f"{ev['percent_below_log2k']:.2f} %"),
        (
            "bits per pixel (prior / nominal)",
            f"{ev.get('bits_per_pixel', 0):.4f} / {ev.get('bits_per_pixel_nominal', 0):.4f}",
        ),
        ("sampling (images/s, n=64)", f"{doc['sampling']['images_per_s']:.1f}"),
    ]
    if "nll_bits_per_code_no_label" in ev:
        rows.insert(2, ("prior NLL, no label (bits/code)", f"{ev['nll_bits_per_code_no_label']:.4f}"))
    for name in ("classifier_fd", "fid"):
        if name in q:
            rows += [(f"{name}: {key}", f"{value:.3f}") for key, value in q[name].items()]
    if isinstance(q.get("classifier"), dict):
        rows.append(("classifier holdout accuracy", f"{q['classifier']['holdout_accuracy']:.3f}"))
    if "compared" in doc:
        c = doc["compared"]
        rows.append((f"compared: {c['run']}", ""))
        rows.append(("  prior NLL (bits/code)", f"{c['val']['nll_bits_per_code']:.4f}"))
        rows.append(("  sampling (images/s, n=64)", f"{c['sampling']['images_per_s']:.1f}"))
        for name in ("classifier_fd", "fid"):
            if name in c["sample_quality"]:
                rows.append((f"  {name}: samples", f"{c['sample_quality'][name]['samples']:.3f}"))
    width = max(len(r[0]) for r in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print(f"\nwrote {path} ({doc['total_s'] / 60:.1f} min)")


if __name__ == "__main__":
    sys.exit(main())
