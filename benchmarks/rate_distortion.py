"""Rate-distortion benchmark: vqkit operating points against JPEG, WebP, AVIF and JPEG XL.

Data: the 4,000 lossless CIFAR-10 `val` images and the 24 Kodak images, every image its own file (headers
counted). vqkit: each run under benchmarks/runs/rd (benchmarks/train_operating_points.py trains them on
CIFAR-10 `train`, never on Kodak) with each entropy model it has (raw, static, prior). Classic codecs
(Pillow for JPEG/WebP/AVIF, imagecodecs for JPEG XL) sweep their quality setting. For each point: bits
per pixel (whole files), PSNR, SSIM, compress and decompress throughput (images/s, in memory, one
process). BD-rate (codec/rd.py) of vqkit against each classic codec, and on Kodak against the published
points of learned codecs (benchmarks/results/published-kodak-learned.json, CompressAI's results; not
measured here, a reference only). JSON first
(benchmarks/results/rate_distortion-DATE.json: machine, command, date), then tables and a plot drawn from it.

    .venv/bin/python benchmarks/rate_distortion.py                    # the full benchmark
    .venv/bin/python benchmarks/rate_distortion.py --max-images 20 --runs /tmp/rd-smoke/*/   # quick look
    .venv/bin/python benchmarks/rate_distortion.py --report benchmarks/results/rate_distortion-X.json
    .venv/bin/python benchmarks/rate_distortion.py --merge A.json B.json --out C.json   # one curve, one table

With ``--search P:C:L ... --search-runs RUN ...`` the listed runs are also measured with the encoder
search (``vqkit compress --search``: codes chosen by decoded error + lambda * bits) on CIFAR-10; those
points are named RUN+searchPxCl.../MODEL and count as their own curve point in the BD-rates. With
``--scales S ...`` every vqkit point is measured with the images coded at each scale (``vqkit compress
--scale``: resampled by S before encoding and back after decoding; rates per original pixel), named
RUN@S/MODEL. ``--cifar10-val DIR`` and ``--kodak DIR`` point at copies of the data elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, features

import common
from vqkit.codec import (
    ENTROPY_CHOICES,
    Coding,
    coded_size,
    compress_images,
    decode_grids,
    decompress,
    decompress_many,
    resample,
)
from vqkit.codec.files import read_inputs
from vqkit.codec.rd import bd_rate, pareto_front
from vqkit.codec.search import SearchConfig
from vqkit.config import load_config, to_dict
from vqkit.data import to_float
from vqkit.metrics import psnr_per_image, ssim_per_image
from vqkit.runs import Run, load_run_config, read_config_doc

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = {"cifar10-val": DATA / "cifar10" / "val", "kodak": DATA / "kodak"}
PUBLISHED = ROOT / "benchmarks" / "results" / "published-kodak-learned.json"
KODAK_PHOTOS = 24  # the published points cover all of them: compared only on the whole set
SETTINGS: dict[str, list[float]] = {
    "jpeg": [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95],  # quality
    "webp": [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95],  # quality, method 6
    "avif": [5, 15, 25, 35, 45, 55, 65, 75, 85, 95],  # quality, speed 6
    "jxl": [15, 11, 8, 6, 4, 3, 2, 1.5, 1, 0.5],  # butteraugli distance, effort 7
}


# ---- classic codecs ------------------------------------------------------------------------------


def _pil_encode(fmt: str, **options: Any) -> Callable[[np.ndarray], bytes]:
    def encode(image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format=fmt, **options)
        return buf.getvalue()

    return encode


def _pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("L" if im.mode in ("L", "I;16") else "RGB"))
    return arr[:, :, None] if arr.ndim == 2 else arr


def classic(
    codec: str, setting: float
) -> tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]:
    if codec == "jpeg":
        return _pil_encode("JPEG", quality=int(setting), optimize=True), _pil_decode
    if codec == "webp":
        return _pil_encode("WEBP", quality=int(setting), method=6), _pil_decode
    if codec == "avif":
        return _pil_encode("AVIF", quality=int(setting), speed=6), _pil_decode
    if codec == "jxl":
        import imagecodecs

        def encode(image: np.ndarray) -> bytes:
            return bytes(imagecodecs.jpegxl_encode(image.squeeze(2) if image.shape[2] == 1 else image,
                                                   distance=float(setting), effort=7))  # fmt: skip

        def decode(data: bytes) -> np.ndarray:
            arr = np.asarray(imagecodecs.jpegxl_decode(data))
            return arr[:, :, None] if arr.ndim == 2 else arr

        return encode, decode
    raise ValueError(f"unknown codec {codec}")


# ---- measurement ---------------------------------------------------------------------------------


def quality(originals: list[np.ndarray], decoded: list[np.ndarray]) -> tuple[float, float]:
    """Mean PSNR (8-bit, capped at 100 dB) and mean SSIM over images of any sizes."""
    psnr, ssim = [], []
    for a, b in zip(originals, decoded, strict=True):
        ta, tb = (to_float(torch.from_numpy(np.array(x[None]))) for x in (a, b))
        psnr.append(min(float(psnr_per_image(ta, tb)[0]), 100.0))
        ssim.append(float(ssim_per_image(a[None], b[None])[0]))
    return float(np.mean(psnr)), float(np.mean(ssim))


def bpp(sizes: list[int], images: list[np.ndarray]) -> float:
    """Mean over images of file bits per pixel."""
    return float(np.mean([8 * n / (im.shape[0] * im.shape[1]) for n, im in zip(sizes, images, strict=True)]))


def measure_classic(codec: str, setting: float, images: list[np.ndarray]) -> dict[str, Any]:
    encode, decode = classic(codec, setting)
    t0 = time.perf_counter()
    blobs = [encode(im) for im in images]
    t1 = time.perf_counter()
    decoded = [decode(b) for b in blobs]
    t2 = time.perf_counter()
    psnr, ssim = quality(images, decoded)
    return {"codec": codec, "setting": setting, "bpp": bpp([len(b) for b in blobs], images),
            "psnr": psnr, "ssim": ssim, "compress_ips": len(images) / (t1 - t0),
            "decompress_ips": len(images) / (t2 - t1), "images": len(images)}  # fmt: skip


def search_label(search: SearchConfig | None) -> str:
    if search is None:
        return ""
    # results before the prior rate existed have no "-rate" suffix: they used the static table
    return f"+search{search.passes}x{search.candidates}l{search.lmbda:g}-{search.rate}"


def measure_vqkit(
    run_dir: Path,
    images: list[np.ndarray],
    a: argparse.Namespace,
    search: SearchConfig | None = None,
    scale: float = 1.0,
) -> list[dict[str, Any]]:
    coding = Coding(Run.load(run_dir, a.device, a.precision))
    variant = run_dir.name + (f"@{scale:g}" if scale != 1 else "") + search_label(search)
    trained = provenance(run_dir)
    warm = compress_images(coding, images[:4], entropy_model="raw", quality=False)  # first-call costs
    decompress(coding, warm.files[0])
    points: list[dict[str, Any]] = []
    # A search costs far more than entropy coding: search once and let "auto" keep the smallest files.
    for model in a.entropy_models if search is None else ["auto"]:
        if model == "static" and not coding.has_static():
            continue
        if model.startswith("prior") and coding.prior() is None:
            continue
        t0 = time.perf_counter()
        result = compress_images(
            coding, images, entropy_model=model, quality=False, search=search, scale=scale
        )
        t1 = time.perf_counter()
        model = result.entropy_model  # what "auto" chose
        n_decode = min(len(images), a.prior_decode_images) if model.startswith("prior") else len(images)
        # decoded together, as `vqkit decompress` does (the prior walks 16 files' images per step)
        decoded = [file_images[0] for file_images in decompress_many(coding, result.files[:n_decode])]
        t2 = time.perf_counter()
        # Quality over every image from the grids written (prior files are slow to decode, so only
        # n_decode of them are), after checking that the files decoded give exactly those images.
        coded = [coded_size(im.shape[0], im.shape[1], scale) for im in images]
        expected = [
            resample(x, im.shape[:2])
            for x, im in zip(decode_grids(coding, result.grids, coded), images, strict=True)
        ]
        if not all(np.array_equal(x, y) for x, y in zip(decoded, expected, strict=False)):
            raise SystemExit(f"{run_dir}: the {model} files decode to other images than their codes")
        psnr, ssim = quality(images, expected)
        s = result.summary()
        points.append({
            "codec": "vqkit", "setting": f"{variant}/{model}", "run": str(run_dir), "variant": variant,
            "entropy_model": model, "trained": trained,
            "search": None if search is None else dataclasses.asdict(search), "scale": scale,
            "bpp": bpp([len(f) for f in result.files], images), "psnr": psnr, "ssim": ssim,
            "compress_ips": len(images) / (t1 - t0), "decompress_ips": n_decode / (t2 - t1),
            "images": len(images), "decoded_images": n_decode,
            "bpp_nominal": s["bpp_nominal"], "bpp_estimated": s["bpp_estimated"],
            "bpp_header": 8 * s["bytes_header"] / s["pixels"], "codes_overhead": s["codes_overhead"],
        })  # fmt: skip
        print(f"  vqkit {points[-1]['setting']}: {points[-1]['bpp']:.4f} bpp, {psnr:.2f} dB", flush=True)
    if not points:
        raise SystemExit(f"{run_dir}: no entropy model of {a.entropy_models} is available")
    return points


def provenance(run_dir: Path) -> dict[str, Any]:
    """How a run was trained, read from its own files, so each operating point can be retrained:
    the recipes in recipes/ whose model section equals the run's, the device, the seconds trained and
    optimizer steps (from its metrics: a resumed run's config keeps its first budget), the images
    seen, the training data, and the run it started from (``train.init_from``: its minutes and steps
    come on top; ``trainable`` says what learned)."""
    doc = read_config_doc(run_dir)
    cfg = load_run_config(run_dir)
    model = to_dict(dataclasses.replace(cfg.model, in_channels=3))
    recipes = sorted(
        r.stem for r in (ROOT / "recipes").glob("*.json")
        if to_dict(dataclasses.replace(load_config(r).model, in_channels=3)) == model
    )  # fmt: skip
    # a shipped model (or a copy of one, vqkit models --copy) carries no metrics: steps and time 0
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    rows = [json.loads(line) for line in lines if line]
    train = [r for r in rows if r["type"] == "train"]
    steps = max((r["step"] for r in train), default=0)
    return {
        "recipes": recipes,
        "device": cfg.train.device,
        "steps": steps,
        "images_seen": steps * cfg.train.batch_size,
        "train_seconds": max((r["elapsed_s"] for r in train), default=0.0),
        "data": cfg.data.spec,
        "init_from": cfg.train.init_from,
        "trainable": cfg.train.trainable,
        "argv": doc.get("argv"),
    }


def machine() -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        **common.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": {n: version(n) for n in ("torch", "numpy", "pillow", "imagecodecs", "constriction",
                                             "scikit-image")},
        "libavif": features.version("avif"), "libwebp": features.version("webp"),
    }  # fmt: skip


def bd_rates(points: list[dict[str, Any]]) -> dict[str, Any]:
    """BD-rate of vqkit (best entropy model per run and encoder setting) against each classic codec,
    anchor = classic."""
    best: dict[str, tuple[float, float]] = {}
    for p in points:
        if p["codec"] != "vqkit":
            continue
        key = p.get("variant", p["run"])
        if key not in best or p["bpp"] < best[key][0]:
            best[key] = (p["bpp"], p["psnr"])
    out: dict[str, Any] = {"vqkit_curve": pareto_front(list(best.values()))}
    for codec in sorted({p["codec"] for p in points} - {"vqkit"}):
        anchor = [(p["bpp"], p["psnr"]) for p in points if p["codec"] == codec]
        result = bd_rate(anchor, list(best.values()))
        out[codec] = None if result is None else result.__dict__
    return out


def published_bd_rates(curve: list[Any], published: dict[str, Any]) -> dict[str, Any]:
    """BD-rate of the vqkit curve (`bd_rates`' "vqkit_curve") against each published learned codec's
    Kodak points (anchor = the published codec): {name: {"label", "points", "bd_rate"}}, bd_rate None
    where the curves share no PSNR range. Their points were measured on other machines, so they are a
    reference for rate only."""
    out: dict[str, Any] = {}
    for codec in published["codecs"]:
        anchor = [(q["bpp"], q["psnr"]) for q in codec["points"]]
        result = bd_rate(anchor, [tuple(x) for x in curve])
        out[codec["name"]] = {"label": codec["label"], "points": anchor,
                              "bd_rate": None if result is None else result.__dict__}  # fmt: skip
    return out


# ---- report (from the JSON only) -----------------------------------------------------------------


def _speed(ips: float) -> str:
    """Images per second; below one, with seconds per image (a prior-coded photo takes tens of seconds,
    which ``.1f`` showed as 0.0)."""
    return f"{ips:.1f}" if ips >= 1 else f"{ips:.3f} ({1 / ips:.1f} s/img)"


def _bd_row(label: str, r: dict[str, Any] | None) -> str:
    text = "n/a (curves do not overlap)" if r is None else f"{r['percent']:+.1f}"
    span = "" if r is None else f"{r['quality_low']:.2f}-{r['quality_high']:.2f}"
    return f"| {label} | {text} | {span} |"


def report(doc: dict[str, Any]) -> str:
    lines = [f"rate-distortion, {doc['date']}, {doc['machine']['platform']}"]
    for name, ds in doc["datasets"].items():
        lines += ["", f"## {name}: {ds['images']} images ({ds['source']})", "",
                  "| codec | setting | bpp | PSNR dB | SSIM | compress img/s | decompress img/s |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for p in sorted(ds["points"], key=lambda p: (p["codec"], p["bpp"])):
            rate = f"{p['bpp']:.4f} | {p['psnr']:.2f} | {p['ssim']:.4f}"
            speed = f"{_speed(p['compress_ips'])} | {_speed(p['decompress_ips'])}"
            lines.append(f"| {p['codec']} | {p['setting']} | {rate} | {speed} |")
        lines += ["", "| vqkit run | recipe(s) | device | trained min | steps | images seen | started from |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        seen: set[str] = set()
        for p in ds["points"]:
            t = p.get("trained")
            if p["codec"] != "vqkit" or t is None or p["run"] in seen:
                continue
            seen.add(p["run"])
            start = (
                "-" if not t.get("init_from") else f"{Path(t['init_from']).name} ({t['trainable']} trained)"
            )
            lines.append(f"| {Path(p['run']).name} | {', '.join(t['recipes']) or '-'} | {t['device']} | "
                         f"{t['train_seconds'] / 60:.1f} | {t['steps']} | {t['images_seen']} | "
                         f"{start} |")  # fmt: skip
        lines += ["", "| BD-rate of vqkit vs | % | PSNR range dB |", "|---|---|---|"]
        lines += [_bd_row(codec, r) for codec, r in ds["bd_rate"].items() if codec != "vqkit_curve"]
        lines += [_bd_row(f"{pub} (published points, reference)", q["bd_rate"])
                  for pub, q in ds.get("published", {}).items()]  # fmt: skip
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        points = doc["datasets"][name]["points"]
        for codec in sorted({p["codec"] for p in points}):
            pts = sorted((p["bpp"], p["psnr"]) for p in points if p["codec"] == codec)
            if codec == "vqkit":
                ax.scatter(*zip(*pts, strict=True), s=14, color="black", alpha=0.4, label="vqkit (all)")
                pts = [tuple(x) for x in doc["datasets"][name]["bd_rate"]["vqkit_curve"]]
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=2 if codec == "vqkit" else 1, label=codec)
        for pub_name, q in doc["datasets"][name].get("published", {}).items():
            pts = sorted(tuple(x) for x in q["points"])
            ax.plot(*zip(*pts, strict=True), ls="--", lw=1, label=f"{pub_name} (published)")
        ax.set(xscale="log", xlabel="bits per pixel (whole files)", ylabel="PSNR (dB)", title=name)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge(docs: list[dict[str, Any]], files: list[Path]) -> dict[str, Any]:
    """One results document from several runs on the same images: each point keeps the figures of the
    run that measured it (throughput too, so compare speeds only within one source), and the sources'
    dates and commands are kept under `merged_from`."""
    now = datetime.now()
    out: dict[str, Any] = {"benchmark": "rate_distortion", "date": now.isoformat(timespec="seconds"),
                           "command": [sys.executable, *sys.argv], "machine": machine(),
                           "merged_from": [{"file": str(f), "date": d["date"], "command": d["command"]}
                                           for f, d in zip(files, docs, strict=True)],
                           "datasets": {}}  # fmt: skip
    for doc in docs:
        for name, ds in doc["datasets"].items():
            into = out["datasets"].setdefault(
                name, {"images": ds["images"], "source": ds["source"], "points": []}
            )
            if ds["images"] != into["images"]:
                raise SystemExit(
                    f"--merge: {name} has {ds['images']} images in one file, {into['images']} in another"
                )
            seen = {(q["codec"], q["setting"]) for q in into["points"]}
            into["points"] += [q for q in ds["points"] if (q["codec"], q["setting"]) not in seen]
    for name, ds in out["datasets"].items():
        ds["bd_rate"] = bd_rates(ds["points"])
        if name == "kodak" and ds["images"] == KODAK_PHOTOS and PUBLISHED.is_file():
            curve = ds["bd_rate"]["vqkit_curve"]
            ds["published"] = published_bd_rates(curve, json.loads(PUBLISHED.read_text()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="*", type=Path, help="run folders (default: benchmarks/runs/rd/*)")
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--max-images", type=int, help="first N images of each data set (quick checks)")
    p.add_argument("--codecs", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument(
        "--entropy-models",
        nargs="*",
        default=["raw", "static", "prior"],
        choices=ENTROPY_CHOICES[1:],
        help="prior: overlapping windows; prior-tiles: independent tiles, as before 2026-11-27 evening",
    )
    p.add_argument("--prior-decode-images", type=int, default=50,
                   help="decode and time only N prior-coded files (h*w prior steps per 16)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="vqkit's torch device (the prior always runs on CPU)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="VQ-VAE arithmetic")
    p.add_argument("--search", nargs="*", default=[], metavar="P:C:L[:RATE]",
                   help="also measure these encoder searches (passes:candidates:lambda[:auto|static], "
                        "vqkit compress --search) on --search-runs")  # fmt: skip
    p.add_argument("--search-runs", nargs="*", type=Path, default=[], help="runs to search (default: none)")
    p.add_argument("--search-datasets", nargs="*", default=["cifar10-val"], choices=list(DATASETS),
                   help="data sets to search on (default cifar10-val: a sweep costs h*w window decodes "
                        "per image, minutes per Kodak photo on 2 cores)")  # fmt: skip
    p.add_argument("--scales", nargs="+", type=float, default=[1.0],
                   help="code at these scales (vqkit compress --scale) (default 1)")  # fmt: skip
    p.add_argument("--cifar10-val", type=Path, default=DATASETS["cifar10-val"], metavar="DIR",
                   help="the lossless CIFAR-10 val images (default: %(default)s)")  # fmt: skip
    p.add_argument("--kodak", type=Path, default=DATASETS["kodak"], metavar="DIR",
                   help="the 24 Kodak photos (default: %(default)s)")  # fmt: skip
    p.add_argument("--published", type=Path, default=PUBLISHED, metavar="JSON",
                   help="published learned-codec points on Kodak, for reference BD-rates (default: "
                        "%(default)s; 'none': leave them out)")  # fmt: skip
    p.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/rate_distortion-DATE)")
    p.add_argument("--report", type=Path, metavar="JSON", help="only redraw tables and plot from a JSON")
    p.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                   help="join the points of several results JSONs on the same images into --out (first "
                        "file wins on a repeated codec/setting), BD-rates recomputed")  # fmt: skip
    a = p.parse_args(argv)
    try:
        specs = [t.split(":") for t in a.search]
        searches = [SearchConfig(int(t[0]), int(t[1]), float(t[2]), *t[3:]) for t in specs]
    except (ValueError, IndexError, TypeError) as e:
        p.error(f"--search takes passes:candidates:lambda[:rate], e.g. 2:4:2000 or 2:4:2000:static ({e})")
    if a.merge:
        if a.out is None:
            p.error("--merge needs --out")
        doc, out = merge([json.loads(f.read_text()) for f in a.merge], a.merge), a.out
        out.write_text(json.dumps(doc, indent=1) + "\n")
    elif a.report:
        doc = json.loads(a.report.read_text())
        out = a.report
    else:
        runs = a.runs or sorted(
            d for d in (ROOT / "benchmarks/runs/rd").glob("*") if (d / "model.safetensors").exists()
        )
        if not runs:
            p.error("no runs: train them with benchmarks/train_operating_points.py or pass --runs")
        now = datetime.now()
        doc = {"benchmark": "rate_distortion", "date": now.isoformat(timespec="seconds"),
               "command": [sys.executable, *sys.argv], "machine": machine(), "device": a.device,
               "precision": a.precision, "datasets": {}}  # fmt: skip
        sources = {"cifar10-val": a.cifar10_val, "kodak": a.kodak}
        published = None if str(a.published) == "none" else json.loads(a.published.read_text())
        for name in a.datasets:
            images, _, _ = read_inputs([str(sources[name])], a.max_images, strict=True)
            print(f"{name}: {len(images)} images", flush=True)
            points = [
                pt for run in runs for scale in a.scales for pt in measure_vqkit(run, images, a, scale=scale)
            ]
            if name in a.search_datasets:
                for run in a.search_runs:
                    for search in searches:
                        points += [
                            pt for scale in a.scales for pt in measure_vqkit(run, images, a, search, scale)
                        ]
            for codec in a.codecs:
                for setting in SETTINGS[codec]:
                    points.append(measure_classic(codec, setting, images))
                    print(
                        f"  {codec} {setting}: {points[-1]['bpp']:.4f} bpp, {points[-1]['psnr']:.2f} dB",
                        flush=True,
                    )
            doc["datasets"][name] = {"images": len(images), "source": str(sources[name]), "points": points,
                                     "bd_rate": bd_rates(points)}  # fmt: skip
            ds = doc["datasets"][name]
            if name == "kodak" and published is not None and ds["images"] == KODAK_PHOTOS:
                ds["published"] = published_bd_rates(ds["bd_rate"]["vqkit_curve"], published)
        out = a.out or ROOT / "benchmarks" / "results" / f"rate_distortion-{now:%Y%m%d-%H%M}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")  # JSON first; the rest is drawn from it
    text = report(doc)
    out.with_suffix(".md").write_text(text + "\n")
    plot(doc, out.with_suffix(".png"))
    print(text + f"\n\nwrote {out} (+ .md, .png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
