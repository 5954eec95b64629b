"""Write benchmarks/README.md, the results picture and README.md's generated blocks from the JSON results.

Every figure comes from a file under benchmarks/results/; nothing numeric is typed here. CURRENT below is
the curation: which files hold the current runs (the older ones stay in the folder and in git history).

    .venv/bin/python benchmarks/make_readme.py           # rewrite all three
    .venv/bin/python benchmarks/make_readme.py --check   # exit 1 when any of them is stale

The picture's PNG carries a hash of the numbers it plots, so ``--check`` finds a stale picture without
drawing it (rendering differs between matplotlib versions; the numbers do not).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vqkit.priors.grouped import schedule_steps

# ---- the curation: one line per current results file, saying what it shows ---------------------------
CURRENT: dict[str, str] = {
    "kodak": "rate_distortion-kodak-h200-search2-20261128.json",  # Kodak, 24: H200 model, plain + searched
    "kodak_cpu": "rate_distortion-kodak-dec2-search2-20261128.json",  # Kodak, 24: model trained on 2 CPUs
    "kodak12": "rate_distortion-kodak12-h200-scale1125-search2-20261128.json",  # first 12 Kodak, scale 1.125
    "kodak_all_codecs": "rate_distortion-kodak-search-20261127.json",  # Kodak, 24: latest AVIF, JPEG XL sweep
    "kodak_cpu_base": "rate_distortion-kodak-decoder-finetune-20261128.json",  # how the CPU model was trained
    "published": "published-kodak-learned.json",  # published learned codecs on Kodak (CompressAI's results)
    "cifar10": "rate_distortion-20261127-1416.json",  # CIFAR-10 val: 5 models, 4 classic codecs
    "cifar10_search": "search_rate-full-20261127.json",  # CIFAR-10 val: search charging the prior's bits
    "quality30": "cifar10_quality-budget30-20261127-0052.json",  # CIFAR-10 recipe, 30 minutes on 2 CPU cores
    "quality60": "cifar10_quality-budget60-20261127-0122.json",  # the same run continued to 60 minutes
    "prior": "prior_quality-20261127-1517.json",  # the CIFAR-10 prior: bits per code, samples, speed
    "prior_files": "prior_calibration-20261127-1404.json",  # that prior in real .vqk files
    "prior_grouped": "prior_quality-20261207-1121.json",  # shipped cifar10: serial vs grouped conv prior
    "denoise": "denoise-zoo-20261207-0008.json",  # the shipped denoiser against NL-means, wavelet, TV, BM3D
    "probe": "probe-20261127-0329.json",  # codes and latents as features, against a plain autoencoder
    "throughput": "throughput-20261127-0449.json",  # speed against the usual stack, CPU
    "throughput_gpu": "throughput-cuda-20261127-0221.json",  # the same on one GPU at batch 64
    "threads": "prior_threads-20261128-0006.json",  # prior coding on 1 and 2 cores
    "codec_speed": "codec_speed-20261207-1227.json",  # grouped conv-context prior vs serial: speed and rate
    "codec_speed_window": "codec_speed-20261207-0246.json",  # the same with a window-context grouped prior
    "fuzz": "fuzz_codec-20261207-0202.json",  # 12,000 damaged .vqk files (versions 1-5): refused or unchanged
    "soak": "soak_resume-20261206-0253.json",  # 50 kills, SIGTERMs and full disks during training
}
# Run folders whose training GPU the results files do not name (they record only "cuda").
GPU_OF_RUN_FOLDER = {
    "gpu-photo-h200": "an NVIDIA H200",
    "rd-gpu": "an NVIDIA H100",
    "gpu-photo": "an NVIDIA H100",
}

ROOT = Path(__file__).resolve().parents[1]
CODEC_NAMES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF", "jxl": "JPEG XL"}
CLASSIC = ["jpeg", "webp", "avif", "jxl"]
PLOT = "kodak-rd.png"
BLOCKS = ("shipped-models", "training-times", "results-at-a-glance")


def load(root: Path) -> dict[str, dict[str, Any]]:
    results = root / "benchmarks" / "results"
    docs = {key: json.loads((results / name).read_text()) for key, name in CURRENT.items()}
    docs["demo_recipe"] = json.loads((root / "recipes" / "demo.json").read_text())
    probes = sorted(results.glob("cifar10_quality-probe-*.json"))  # network probes beside quality30
    docs["quality_probes"] = {"rows": [{"file": p.name, **json.loads(p.read_text())} for p in probes]}
    return docs


# ---- numbers ----------------------------------------------------------------------------------------


def classic_points(doc: dict[str, Any], dataset: str, codec: str) -> list[tuple[float, float]]:
    return sorted((p["bpp"], p["psnr"]) for p in doc["datasets"][dataset]["points"] if p["codec"] == codec)


def psnr_at(points: list[tuple[float, float]], bpp: float) -> float | None:
    """PSNR of a swept codec at ``bpp``: PCHIP over log bpp, inside the sweep only."""
    from scipy.interpolate import PchipInterpolator

    if len(points) < 2 or not points[0][0] <= bpp <= points[-1][0]:
        return None
    x, y = zip(*points, strict=True)
    return float(PchipInterpolator(np.log(x), y)(math.log(bpp)))


def bpp_for(points: list[tuple[float, float]], psnr: float) -> float | None:
    """Bits per pixel a swept codec needs for ``psnr``: PCHIP of log bpp over PSNR, inside the sweep."""
    from scipy.interpolate import PchipInterpolator

    pts = sorted(points, key=lambda p: p[1])
    if len(pts) < 2 or not pts[0][1] <= psnr <= pts[-1][1]:
        return None
    return float(math.exp(PchipInterpolator([p[1] for p in pts], np.log([p[0] for p in pts]))(psnr)))


def vqkit_points(doc: dict[str, Any], dataset: str = "kodak") -> list[dict[str, Any]]:
    return [p for p in doc["datasets"][dataset]["points"] if p["codec"] == "vqkit"]


def describe(p: dict[str, Any]) -> str:
    name = Path(p["run"]).name
    scale = p.get("scale") or 1.0
    parts = [name + (f", coded at scale {scale:g}" if scale != 1.0 else "")]
    parts.append(f"{p['entropy_model']} entropy model")
    s = p.get("search")
    parts.append(f"search {s['passes']} passes, lambda {s['lmbda']:g}" if s else "plain encoder")
    return ", ".join(parts)


def device_words(p: dict[str, Any], machine: dict[str, Any]) -> str:
    t = p["trained"]
    if t["device"].startswith("cuda"):
        return GPU_OF_RUN_FOLDER.get(Path(p["run"]).parent.name, "a GPU")
    return f"{machine['cpus']} CPU cores"


def training_chain(p: dict[str, Any], docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``trained`` records from this run back through ``init_from`` to the first run, found in the
    curated files (by path, then by folder name beside the run)."""
    runs: dict[str, dict[str, Any]] = {}
    for doc in docs.values():
        for ds in doc.get("datasets", {}).values():
            for q in ds["points"]:
                if q["codec"] == "vqkit" and q.get("trained"):
                    runs.setdefault(q["run"], q["trained"])
    chain: list[dict[str, Any]] = []
    visited: set[str] = set()
    run = p["run"]
    while run in runs and run not in visited:
        visited.add(run)
        t = runs[run]
        chain.append(t)
        start = t.get("init_from")
        if not start:
            break
        run = start if start in runs else str(Path(run).parent / Path(start).name)
    return chain


def minutes_text(chain: list[dict[str, Any]]) -> str:
    parts = []
    for t in reversed(chain):
        what = "decoder" if t.get("trainable") == "decoder" else "VQ-VAE"
        parts.append(f"{minutes(t['train_seconds'])} {what}")
    return " + ".join(parts)


def minutes(seconds: float) -> str:
    m = seconds / 60
    return f"{round(m)} min" if abs(m - round(m)) < 0.05 else f"{m:.1f} min"


def join(words: list[str]) -> str:
    return (
        "none" if not words else words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    )


def seconds_per_image(ips: float) -> str:
    return f"{1 / ips:.1f}" if ips < 1 else f"{1 / ips:.4f}"


def where(doc: dict[str, Any], key: str) -> list[str]:
    """The lines that state a table's command, date, machine and results file."""
    cmd = doc.get("command", "")
    cmd = " ".join(cmd) if isinstance(cmd, list) else cmd
    cmd = cmd.replace("/work/main/.venv/bin/python", "python")
    m = doc.get("machine", {})
    machine = f"{m.get('cpus', '?')} CPU cores ({m.get('processor', '?')}), torch {m.get('torch', '?')}"
    gpu = doc.get("gpu")
    if gpu:
        machine = f"{gpu}, {machine}"
    return [
        f"- results file: `benchmarks/results/{CURRENT[key]}`",
        f"- command: `{cmd}`",
        f"- date: {doc.get('date', '?')[:16].replace('T', ' ')}; machine: {machine}",
    ]


def fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def lead(vq: float, other: float | None) -> str:
    return "n/a" if other is None else f"{other:.2f} ({vq - other:+.2f})"


# ---- Kodak ------------------------------------------------------------------------------------------


def classic_kodak(docs: dict[str, dict[str, Any]]) -> dict[str, tuple[str, list[tuple[float, float]]]]:
    """Each classic codec's Kodak sweep (all 24) and its file key: JPEG and WebP from the headline run,
    AVIF and JPEG XL from the latest run that swept them."""
    out = {}
    for codec in CLASSIC:
        key = "kodak" if classic_points(docs["kodak"], "kodak", codec) else "kodak_all_codecs"
        out[codec] = (key, classic_points(docs[key], "kodak", codec))
    return out


def same_sweeps(docs: dict[str, dict[str, Any]]) -> bool:
    return all(
        classic_points(docs["kodak"], "kodak", c) == classic_points(docs["kodak_all_codecs"], "kodak", c)
        for c in ("jpeg", "webp")
    )


def kodak_rows(docs: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(file key, point, doc) for every vqkit point of the current Kodak runs; the H200 model's base
    run is left out where its fine-tuned decoder is measured on the same codes."""
    rows = []
    for key in ("kodak", "kodak12", "kodak_cpu"):
        doc = docs[key]
        pts = vqkit_points(doc)
        tuned = {Path(p["trained"].get("init_from") or "").name for p in pts}
        rows += [(key, p, doc) for p in pts if Path(p["run"]).name not in tuned]
    return rows


def kodak_section(docs: dict[str, dict[str, Any]]) -> list[str]:
    sweeps = classic_kodak(docs)
    lines = ["## Kodak (24 photographs, 768x512), vqkit against JPEG, WebP, AVIF and JPEG XL", ""]
    lines += [
        "Real `.vqk` files and real files of each classic codec, every image its own file with its header,",
        "rates in bits per pixel of the whole file. The vqkit models never saw Kodak. Classic codecs are",
        "read at vqkit's rate by PCHIP interpolation over log bpp along their quality sweeps; a cell shows",
        "the codec's PSNR there and, in brackets, vqkit's lead in dB (negative: the codec is better).",
        "",
        f"![Kodak rate-distortion](results/{PLOT})",
        "",
        caption(docs),
        "",
        "| vqkit point | photos | bpp | PSNR dB | SSIM | "
        + " | ".join(f"{CODEC_NAMES[c]} at that bpp" for c in CLASSIC)
        + " | compress s/photo | decode s/photo |",
        "|---|---|---|---|---|" + "---|" * len(CLASSIC) + "---|---|",
    ]
    for _key, p, _doc in kodak_rows(docs):
        n = p["images"]
        cells = []
        for c in CLASSIC:
            key, pts = sweeps[c]
            if n != docs[key]["datasets"]["kodak"]["images"]:
                pts = classic_points(_doc, "kodak", c)  # the same photos as the vqkit point, or nothing
            cells.append(lead(p["psnr"], psnr_at(pts, p["bpp"])) if pts else "not swept on these photos")
        lines.append(
            f"| {describe(p)} | {n} | {p['bpp']:.4f} | {p['psnr']:.2f} | {p['ssim']:.3f} | "
            + " | ".join(cells)
            + f" | {seconds_per_image(p['compress_ips'])} | {seconds_per_image(p['decompress_ips'])} |"
        )
    lines += ["", "How each model was trained (from the same files):", ""]
    lines += ["| run | trained on | training |", "|---|---|---|"]
    seen = set()
    for _key, p, doc in kodak_rows(docs):
        if p["run"] in seen:
            continue
        seen.add(p["run"])
        lines.append(
            f"| {Path(p['run']).name} ({Path(p['run']).parent.name}) | {device_words(p, doc['machine'])} | "
            f"{minutes_text(training_chain(p, docs))} |"
        )
    lines += ["", "The runs:", ""]
    for key in ("kodak", "kodak_cpu", "kodak12", "kodak_all_codecs"):
        lines += [f"{key_title(key)}:", "", *where(docs[key], key), ""]
    pub = docs["published"]
    lines += [
        "Published learned codecs, PSNR at the bpp of the headline vqkit points by the same interpolation",
        f"(not measured here; source: {pub['source']}, copied into",
        f"`benchmarks/results/{CURRENT['published']}`):",
        "",
        "| codec | " + " | ".join(f"at {p['bpp']:.4f} bpp" for p in headline_points(docs)) + " |",
        "|---|" + "---|" * len(headline_points(docs)),
    ]
    for c in pub["codecs"]:
        pts = sorted((q["bpp"], q["psnr"]) for q in c["points"])
        cells = [lead(p["psnr"], psnr_at(pts, p["bpp"])) for p in headline_points(docs)]
        lines.append(f"| {c['label']} | " + " | ".join(cells) + " |")
    return lines


def key_title(key: str) -> str:
    return {
        "kodak": "H200 model, all 24 photos",
        "kodak_cpu": "CPU-only model, all 24 photos",
        "kodak12": "H200 model at scale 1.125, first 12 photos",
        "kodak_all_codecs": "AVIF and JPEG XL (with JPEG, WebP and older vqkit models), all 24 photos",
    }[key]


def headline_points(docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The H200 model's fine-tuned points on all 24 photos, plain and searched."""
    return [p for _k, p, _d in kodak_rows(docs) if _k == "kodak"]


def caption(docs: dict[str, dict[str, Any]]) -> str:
    src = CURRENT["kodak_all_codecs"]
    same = (
        "whose JPEG and WebP sweeps are identical, point for point, to the headline run's"
        if same_sweeps(docs)
        else "whose JPEG and WebP sweeps differ from the headline run's"
    )
    best = min(headline_points(docs), key=lambda p: p["bpp"])
    sweeps = classic_kodak(docs)
    ahead = [CODEC_NAMES[c] for c in CLASSIC if (psnr_at(sweeps[c][1], best["bpp"]) or 99) < best["psnr"]]
    behind = [CODEC_NAMES[c] for c in CLASSIC if (psnr_at(sweeps[c][1], best["bpp"]) or 0) > best["psnr"]]
    return (
        f"Measured on {docs['kodak']['machine']['cpus']} CPU cores. JPEG and WebP come from the headline run "
        f"(`{CURRENT['kodak']}`); that run did not sweep AVIF or JPEG XL, so their curves come from "
        f"`{src}`, all 24 photos, {same}. Published learned codecs are dashed. At {best['bpp']:.3f} bpp "
        f"({best['psnr']:.2f} dB) the best vqkit point beats {join(ahead)} "
        f"and is beaten by {join(behind)}."
    )


def plot_data(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Everything the picture shows, as plain numbers (hashed into the PNG for --check)."""
    vq = []
    for key, p, _doc in kodak_rows(docs):
        label = "H200 model" if key != "kodak_cpu" else "CPU-only model"
        if p.get("scale", 1.0) != 1.0:
            label += f", scale {p['scale']:g}, first {p['images']} photos"
        label += ", 2-pass search" if p.get("search") else ", plain"
        vq.append({"label": label, "bpp": p["bpp"], "psnr": p["psnr"], "searched": bool(p.get("search"))})
    classic = {CODEC_NAMES[c]: pts for c, (_k, pts) in classic_kodak(docs).items()}
    published = {
        c["label"].split(" (")[0]: sorted((q["bpp"], q["psnr"]) for q in c["points"])
        for c in docs["published"]["codecs"]
    }
    return {"vqkit": vq, "classic": classic, "published": published}


def data_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def draw(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(11, 5.8))
    colours = {"JPEG": "#d62728", "WebP": "#2ca02c", "AVIF": "#9467bd", "JPEG XL": "#ff7f0e"}
    for name, pts in data["classic"].items():
        x, y = zip(*pts, strict=True)
        ax.plot(x, y, marker="o", ms=3, lw=1.4, color=colours[name], label=f"{name} (measured)")
    styles = [(0, (5, 2)), (0, (2, 2)), (0, (6, 2, 1, 2)), (0, (1, 1))]
    for (name, pts), style in zip(data["published"].items(), styles, strict=False):
        x, y = zip(*pts, strict=True)
        ax.plot(x, y, ls=style, lw=1.3, color="#555555", marker=".", ms=4, label=f"{name} (published)")
    markers = {"H200": ("*", "#1f77b4"), "CPU-only": ("D", "#17becf")}
    for p in data["vqkit"]:
        m, colour = markers["CPU-only" if p["label"].startswith("CPU") else "H200"]
        twelve = "first" in p["label"]
        ax.scatter(
            p["bpp"],
            p["psnr"],
            marker=m,
            s=170 if m == "*" else 60,
            facecolors=colour if p["searched"] else "white",
            edgecolors="black" if twelve else colour,
            linewidths=1.6,
            zorder=5,
            label=f"vqkit, {p['label']}",
        )
    ax.set(
        xscale="log",
        xlim=(0.15, 1.0),
        ylim=(25, 36),
        xlabel="bits per pixel (whole files)",
        ylabel="PSNR (dB, RGB)",
        title="Kodak, 24 photos: vqkit against classic and learned codecs",
    )
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0]))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None, "Source": data_hash(data)})
    plt.close(fig)


def plot_is_current(data: dict[str, Any], path: Path) -> bool:
    from PIL import Image

    if not path.exists():
        return False
    with Image.open(path) as im:
        return im.text.get("Source") == data_hash(data)  # type: ignore[attr-defined]


# ---- CIFAR-10 ---------------------------------------------------------------------------------------


def cifar_section(docs: dict[str, dict[str, Any]]) -> list[str]:
    doc, ds = docs["cifar10"], "cifar10-val"
    n = doc["datasets"][ds]["images"]
    lines = [
        f"## CIFAR-10 val ({n} lossless 32x32 images), vqkit against JPEG, WebP, AVIF and JPEG XL",
        "",
        "One file per image, headers counted (they dominate at 32x32, which is why the classic codecs",
        "need far more bits here than on photographs). A cell gives the bits per pixel a classic codec",
        "needs for vqkit's PSNR (PCHIP of log bpp over PSNR along its sweep; n/a outside it). Each vqkit",
        "model with its best entropy model; `+search` rows are the encoder search.",
        "",
        "| vqkit point | trained | bpp | PSNR dB | SSIM | "
        + " | ".join(f"{CODEC_NAMES[c]} bpp for that PSNR" for c in CLASSIC)
        + " | results file |",
        "|---|---|---|---|---|" + "---|" * len(CLASSIC) + "---|",
    ]
    best: dict[str, tuple[dict[str, Any], str]] = {}  # variant -> (its lowest-rate point, results key)
    for key in ("cifar10", "cifar10_search"):
        for p in vqkit_points(docs[key], ds):
            tag = p.get("variant", p["run"])
            if tag not in best or p["bpp"] < best[tag][0]["bpp"]:
                best[tag] = (p, key)
    for p, key in sorted(best.values(), key=lambda r: (r[0]["psnr"], r[0]["bpp"])):
        t = p["trained"]
        cells = [fmt(bpp_for(classic_points(doc, ds, c), p["psnr"]), 3) for c in CLASSIC]
        trained = f"{minutes(t['train_seconds'])}, {device_words(p, docs[key]['machine'])}"
        name = Path(p["run"]).name
        s = p.get("search")
        if s:
            name += f" +search {s['passes']} passes, lambda {s['lmbda']:g}, {s.get('rate', 'static')} rate"
        lines.append(
            f"| {name} ({p['entropy_model']}) | {trained} | {p['bpp']:.4f} | {p['psnr']:.2f} | "
            f"{p['ssim']:.3f} | " + " | ".join(cells) + f" | `{CURRENT[key]}` |"
        )
    bd = doc["datasets"][ds]["bd_rate"]
    lines += [
        "",
        "BD-rate of vqkit's curve (the rows of the first file) against each codec, from the file: "
        + ", ".join(f"{CODEC_NAMES[c]} {bd[c]['percent']:+.1f} %" for c in CLASSIC if bd.get(c))
        + " (negative: vqkit needs fewer bits for the same PSNR).",
        "",
        *where(doc, "cifar10"),
        "",
        *where(docs["cifar10_search"], "cifar10_search"),
    ]
    return lines


def quality_section(docs: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "## CIFAR-10 reconstruction quality (`recipes/cifar10.json`, 8x8 codes, K = 512)",
        "",
        "| training | val images | PSNR dB | SSIM | codebook usage | perplexity | dead codes "
        "| train images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in ("quality30", "quality60"):
        d = docs[key]
        v = d["final_val"]
        lines.append(
            f"| {d['budget_min']:g} min, {d['machine']['cpus']} CPU cores | {v['num_images']} | "
            f"{v['psnr']:.2f} | {v['ssim']:.3f} | {v['codebook_usage']:.3f} | "
            f"{v['perplexity']:.1f} / {v['codebook_size']} | {v['dead_codes']} | "
            f"{d['median_train_images_per_s']:.0f} |"
        )
    lines += ["", *where(docs["quality30"], "quality30"), "", *where(docs["quality60"], "quality60")]
    return lines + probe_lines(docs["quality30"], docs["quality_probes"]["rows"])


def probe_lines(base: dict[str, Any], probes: list[dict[str, Any]]) -> list[str]:
    """Network probes: the recipe with one change (``--set``), trained for the same budget, beside the
    recipe's own run: every ``cifar10_quality-probe-*`` results file."""
    if not probes:
        return []
    lines = [
        "",
        "Network probes: the recipe with one change, the same budget, final PSNR on the same 4,000 val",
        "images (each probe's command and date are in its results file). Images/s compare only on the",
        "same CPU; the recipe's own run on the probes' CPU is the quantizer table's `vq`, `vqkit` row.",
        "",
        "| change | minutes | steps | PSNR dB | SSIM | train images/s | CPU | results file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [(CURRENT["quality30"], base)] + [(d["file"], d) for d in probes]
    for name, d in rows:
        words = d["command"].split()
        sets = ", ".join(f"`{words[i + 1]}`" for i, w in enumerate(words[:-1]) if w == "--set")
        v = d["final_val"]
        lines.append(
            f"| {sets or 'none (the recipe)'} | {d['budget_min']:g} | {d['steps']} | {v['psnr']:.2f} | "
            f"{v['ssim']:.3f} | {d['median_train_images_per_s']:.0f} | "
            f"{d['machine'].get('cpu_model') or 'not recorded'} | `{name}` |"
        )
    return lines


def prior_section(docs: dict[str, dict[str, Any]]) -> list[str]:
    d = docs["prior"]
    v, s = d["val"], d["sample_quality"]["classifier_fd"]
    tr = d["training"]["prior_config"]
    files = docs["prior_files"]["rows"]
    lines = [
        "## Prior over the CIFAR-10 codes",
        "",
        f"A class-conditional causal transformer ({tr['prior']['layers']} layers, width "
        f"{tr['prior']['width']}) over the 8x8 codes of the one-hour CIFAR-10 model, on "
        f"{v['num_grids']} val images:",
        "",
        "| measure | value |",
        "|---|---|",
        f"| log2 K (nominal) | {v['log2_codebook_size']:.3f} bits/code |",
        f"| unigram entropy of the val codes | {v['unigram_entropy_bits_per_code']:.3f} bits/code |",
        f"| prior, with class label | {v['nll_bits_per_code']:.3f} bits/code "
        f"({v['percent_below_log2k']:.1f} % below log2 K) |",
        f"| prior, without label | {v['nll_bits_per_code_no_label']:.3f} bits/code |",
    ]
    for r in files:
        lines.append(
            f"| real one-image `.vqk` files, {r['logits']} logits | {r['bpp_actual']:.4f} bpp "
            f"(estimated {r['bpp_estimated']:.4f} + headers), {r['images_per_s']:.1f} images/s |"
        )
    lines += [
        f"| sampling speed (n = {d['sampling']['n']}) | {d['sampling']['images_per_s']:.0f} images/s |",
        f"| Frechet distance on a small classifier's features: real training images / reconstructions "
        f"/ prior samples | {s['real_train']:.1f} / {s['reconstructions']:.1f} / {s['samples']:.1f} |",
        "",
        f"![class-conditional samples](results/{d['pictures']['classes'].split(' ')[0]})",
        "",
        *where(d, "prior"),
        "",
        *where(docs["prior_files"], "prior_files"),
        "",
        *grouped_prior_lines(docs["prior_grouped"]),
    ]
    return lines


def grouped_prior_lines(d: dict[str, Any]) -> list[str]:
    """The serial and the grouped prior of one VQ-VAE as samplers, measured in one run with the same
    feature networks (so the two Frechet distances compare)."""
    g = d["compared"]
    made = g["prior_config"]["prior"]
    rows = [
        ("serial (causal transformer)", d),
        (f"grouped, {made['schedule']} {made.get('context', 'window')} context", g),
    ]
    lines = [
        f"### Sampling: the serial prior against a grouped prior (`{d['run']}`)",
        "",
        f"On {d['val']['num_grids']} val images; Frechet distance of {g['sample_quality']['num_images']} "
        "samples to the real val images on the same classifier's features (real training images: "
        f"{d['sample_quality']['classifier_fd']['real_train']:.1f}, reconstructions: "
        f"{d['sample_quality']['classifier_fd']['reconstructions']:.1f}).",
        "",
        "| prior | bits/code, with label | sampling, images/s (n = 64) | Frechet distance of samples |",
        "|---|---|---|---|",
    ]
    for name, r in rows:
        nll, speed = r["val"]["nll_bits_per_code"], r["sampling"]["images_per_s"]
        lines.append(
            f"| {name} | {nll:.3f} | {speed:.0f} | {r['sample_quality']['classifier_fd']['samples']:.1f} |"
        )
    return [*lines, "", *where(d, "prior_grouped")]


def _card_minutes(name: str) -> dict[str, float]:
    """A shipped model's training minutes per step (VQ-VAE, prior, ...), from its card."""
    from vqkit.runs import shipped

    return {step: float(m) for step, m in shipped.get(name).card()["minutes"].items()}


def denoise_section(docs: dict[str, dict[str, Any]]) -> list[str]:
    d = docs["denoise"]
    methods = ["noisy", "nl_means", "wavelet", "tv", "bm3d", "denoised"]
    names = {"noisy": "noisy", "nl_means": "NL-means", "wavelet": "wavelet", "tv": "TV", "bm3d": "BM3D",
             "denoised": "vqkit"}  # fmt: skip
    steps = d["run_config"]["train"]["max_steps"]
    lines = [
        "## Denoising (the shipped model `denoise`, `recipes/denoise.json`: one blind model for sigma 5-55)",
        "",
        f"Trained {steps:,} steps ({_card_minutes('denoise')['VQ-VAE']:.0f} min) on "
        f"{d['machine']['cpus']} CPU cores, on "
        "CIFAR-10 mixed with crops of licensed photographs (never Kodak). PSNR dB / SSIM against the "
        "clean images; the best PSNR of each row in bold.",
        "",
        "| data, sigma | images | " + " | ".join(names.get(m, m) for m in methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for r in d["results"]:
        top = max(methods[1:], key=lambda m: r[m]["psnr"])
        cells = [
            (f"**{r[m]['psnr']:.2f}**" if m == top else f"{r[m]['psnr']:.2f}") + f" / {r[m]['ssim']:.3f}"
            for m in methods
        ]
        lines.append(f"| {r['set']}, {r['sigma']:g} | {r['num_images']} | " + " | ".join(cells) + " |")
    ceiling = d["clean_input_ceiling"]
    lines += [
        "",
        "The same model given clean images: "
        + ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in ceiling.items())
        + " (the ceiling the discrete codes set).",
        "",
        "![denoising examples](../src/vqkit/zoo/models/denoise/denoise_examples.png)",
        "",
        *where(d, "denoise"),
    ]
    return lines


def probe_section(docs: dict[str, dict[str, Any]]) -> list[str]:
    d = docs["probe"]
    vq, ae = d["runs"]["vq"], d["runs"]["ae"]
    rows = [
        ("VQ-VAE: bag of codes", vq["results"]["codes"], vq["reconstruction"]),
        ("VQ-VAE: pooled encoder latents", vq["results"]["latents"], None),
        ("plain autoencoder: pooled latents", ae["results"]["latents"], ae["reconstruction"]),
        ("raw pixels", d["pixels"], None),
    ]
    lines = [
        "## Codes as features (linear probe and k-NN on CIFAR-10)",
        "",
        f"Both models trained {d['budget_min']:g} minutes; classifiers fit on {vq['num_train']} training "
        f"images, scored on {vq['num_test']} val images (chance {100 * d['chance']:.1f} %).",
        "",
        f"| features | dims | linear probe | {d['settings']['k']}-NN | reconstruction PSNR / SSIM |",
        "|---|---|---|---|---|",
    ]
    for name, r, rec in rows:
        recon = "" if rec is None else f"{rec['psnr']:.2f} dB / {rec['ssim']:.3f}"
        lines.append(
            f"| {name} | {r['dims']} | {100 * r['linear']:.1f} % | {100 * r['knn']:.1f} % | {recon} |"
        )
    return [*lines, "", *where(d, "probe")]


def reliability_section(docs: dict[str, dict[str, Any]]) -> list[str]:
    fuzz, soak = docs["fuzz"], docs["soak"]
    lines = [
        "## Reliability: damaged files and interrupted training",
        "",
        f"{fuzz['inputs']:,} mutated `.vqk` files (seed {fuzz['seed']}). A file of version 3 or later",
        "(checksums) must be refused with one error or decode to exactly the images of the undamaged",
        "file; files of versions 1 and 2 (no checksums) may decode to other pixels but must never crash",
        "or hang.",
        "",
        "| files | mutation | inputs | refused | decoded unchanged | decoded differently | tracebacks "
        "| hangs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    silent = fuzz.get("silent_wrong_decodes_v3_up", fuzz.get("silent_wrong_decodes_v3_v4"))
    for r in fuzz["rows"]:
        files = {"v3": "version 3", "v4": "version 4", "v5": "version 5"}.get(r["files"], "versions 1-2")
        counts = " | ".join(
            str(r[k]) for k in ("inputs", "refused", "same", "different", "traceback", "hang")
        )
        lines.append(f"| {files} | {r['mutation'].replace('_', ' ')} | {counts} |")
    lines += [
        "",
        f"Silent wrong decodes of files of version 3 or later: **{silent}**; slowest decode "
        f"{fuzz['slowest_decode_s']:.2f} s; peak memory {fuzz['peak_rss_mb']:.0f} MB "
        f"({fuzz['rss_growth_mb']:.0f} MB above the start).",
        "",
        *where(fuzz, "fuzz"),
        "",
    ]
    s = soak["summary"]
    names = {"kill9": "kill -9", "diskfull": "disk full", "sigterm": "SIGTERM"}
    kinds = ", ".join(f"{n} {names.get(k, k)}" for k, n in sorted(s["by_kind"].items()))
    lines += [
        f"A small training run interrupted {s['interruptions']} times ({kinds}; {s['landed']} landed before "
        f"the run ended, {s['mid_commit']} in the middle of a checkpoint), each time resumed with "
        f"`--resume`, over {s['trials']} runs; the disk fills for real (a small tmpfs).",
        "",
        "| runs | final weights bit-equal to an uninterrupted run | metrics whole, each step once | "
        "SIGTERM exits saved (rc 0) | tracebacks |",
        "|---|---|---|---|---|",
        f"| {s['trials']} | {s['weights_equal']} | {s['metrics_whole']} | "
        f"{s['sigterm_exit_0']} of {s['by_kind'].get('sigterm', 0)} | {s['tracebacks']} |",
        "",
        *where(soak, "soak"),
    ]
    return lines


def speed_section(docs: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Speed against the usual stack (vector-quantize-pytorch in a plain loop)", ""]
    for key in ("throughput", "throughput_gpu"):
        d = docs[key]
        r, v = d["stacks"]["reference"], d["stacks"]["vqkit"]
        where_ = d["gpu"] or f"{d['machine']['cpus']} CPU cores"
        lines += [
            f"| {where_}, batch {d['batch_size']}, {d['budget_min']:g} min each "
            "| reference | vqkit | ratio |",
            "|---|---|---|---|",
        ]
        for name, k in (("training", "train"), ("encode", "encode"), ("decode", "decode")):
            a, b = r[f"{k}_images_per_s"], v[f"{k}_images_per_s"]
            lines.append(f"| {name} images/s | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")
        lines.append(f"| val PSNR at the end (dB) | {r['val_psnr']:.2f} | {v['val_psnr']:.2f} | |")
        lines += ["", *where(d, key), ""]
    t = docs["threads"]
    lines += [
        f"Prior coding of Kodak photos ({t['images']} photos, overlapping windows) on 1 and 2 cores, "
        f"files {'byte-identical' if t['files_identical'] else 'DIFFERENT'}:",
        "",
        "| threads | compress s/photo | decode s/photo |",
        "|---|---|---|",
        *(
            f"| {r['threads']} | {r['compress_s_per_image']:.1f} | {r['decompress_codes_s_per_image']:.1f} |"
            for r in t["rows"]
        ),
        "",
        *where(t, "threads"),
    ]
    return lines


def grouped_design(d: dict[str, Any]) -> tuple[str, str, str]:
    """(what, how, schedule) of a codec_speed document's grouped prior: its schedule and context, the
    command that trained it, and the schedule (files written before the priors were recorded held a
    2x2 window prior)."""
    made = d.get("priors", {}).get("grouped")
    how = f"`{' '.join(made['argv'][1:])}`" if made and made.get("argv") else ""
    prior = (made or {}).get("prior") or {}
    schedule = prior.get("schedule", "2x2")
    return f"{schedule} {prior.get('context', 'window')} context", how, schedule


def codec_speed_section(docs: dict[str, dict[str, Any]]) -> list[str]:
    designs = [docs[key] for key in ("codec_speed", "codec_speed_window")]
    lines = [
        "## Codec speed: the grouped prior against the serial prior",
        "",
        "Two designs of the grouped prior, each on the same VQ-VAE as the serial prior and each measured",
        "beside it in its own run (bits/code on Kodak: the photos both priors coded). Speeds are those of",
        "the vqkit of each run's date: the integer network's runtime got faster between the two runs,",
        "so compare a design's speed with the serial prior of its own run, and rates across rows.",
        "",
        "| grouped prior | steps | Kodak decompress s | Kodak bits/code, grouped / serial "
        "| CIFAR-10 together, images/s | one call per file, images/s "
        "| CIFAR-10 bits/code, grouped / serial | measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in designs:
        k, c = d["kodak"], d["cifar"]
        what, _, schedule = grouped_design(d)
        steps = schedule_steps(schedule)
        kodak_rate = ""
        if "serial" in k:
            gk, sk = k["grouped_on_serial_images"]["bits_per_code"], k["serial"]["bits_per_code"]
            n = k["serial"]["images"]
            kodak_rate = f"{gk:.3f} / {sk:.3f} ({gk / sk - 1:+.1%}, {n} photo{'s' if n > 1 else ''})"
        cifar_rate = ""
        if "serial_rate" in c:
            gc, sc = c["grouped_rate"]["bits_per_code"], c["serial_rate"]["bits_per_code"]
            cifar_rate = f"{gc:.3f} / {sc:.3f} ({gc / sc - 1:+.1%})"
        g = c["grouped"]
        speeds = f"{g['together_images_per_s']:,.0f} | {g['lone_images_per_s']:,.1f}"
        decode = k["grouped"]["decode_s_median"]
        when = d["date"][:16].replace("T", " ")
        lines.append(f"| {what} | {steps} | {decode:.3f} | {kodak_rate} | {speeds} | {cifar_rate} | {when} |")
    for d, key in zip(designs, ("codec_speed", "codec_speed_window"), strict=True):
        lines += ["", *codec_speed_tables(d, key)]
    return lines


def codec_speed_tables(d: dict[str, Any], key: str) -> list[str]:
    """The Kodak and CIFAR-10 tables of one codec_speed document."""
    k, c = d["kodak"], d["cifar"]
    what, how, _ = grouped_design(d)
    lines = [
        f"### Grouped prior, {what}",
        "",
        f"The VQ-VAE `{d['serial_run']}` with its serial prior and with a grouped prior ({what}"
        + (f", trained with {how}" if how else "")
        + "),",
        "coded through its integer network. Seconds per file with the model loaded, medians over the photos;",
        "WebP, AVIF and JPEG XL at one mid setting each in the same run.",
        "",
        "| Kodak | photos | compress s | decompress s | bits/code | bpp | PSNR dB |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [("vqkit, grouped prior", k["grouped"])]
    if "grouped_search" in k:
        name = k["grouped_search"].get("search_name", k["grouped_search"]["search"]["passes"])
        label = "the default search" if name == "default" else f"search, {name} passes"
        rows.append((f"vqkit, grouped prior, {label}", k["grouped_search"]))
    if "serial" in k:
        rows += [("vqkit, grouped prior (serial's photos)", k["grouped_on_serial_images"]),
                 ("vqkit, serial prior", k["serial"])]  # fmt: skip
    for name, r in rows:
        psnr = f"{r['psnr_mean']:.2f}" if "psnr_mean" in r else ""
        lines.append(f"| {name} | {r['images']} | {r['encode_s_median']:.3f} | {r['decode_s_median']:.3f} | "
                     f"{r['bits_per_code']:.3f} | {r['bpp_actual']:.3f} | {psnr} |")  # fmt: skip
    for r in k["peers"]:
        if "error" not in r:
            times = f"{r['encode_s_median']:.3f} | {r['decode_s_median']:.3f}"
            name = f"{CODEC_NAMES[r['codec']]} {r['setting']:g}"
            psnr = f"{r['psnr_mean']:.2f}" if "psnr_mean" in r else ""
            images = k["grouped"]["images"]
            lines.append(f"| {name} | {images} | {times} | | {r['bpp_actual']:.3f} | {psnr} |")
    lines += [
        "",
        "| CIFAR-10 val, one file per image | files | together, images/s | one call per file, images/s "
        "| bits/code | bpp |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("grouped", "serial"):
        if name in c:
            r = c[name]
            speeds = f"{r['together_images_per_s']:,.0f} | {r['lone_images_per_s']:,.1f}"
            lines.append(f"| {name} prior | {r['files']} | {speeds} | {r['bits_per_code']:.3f} | "
                         f"{r['bpp_actual']:.3f} |")  # fmt: skip
    if "serial_rate" in c:
        g, sr = c["grouped_rate"], c["serial_rate"]
        lines += [
            "",
            f"Rate on {g['images']:,} val images: grouped {g['bits_per_code']:.3f} bits/code "
            f"({g['bpp_actual']:.3f} bpp), serial {sr['bits_per_code']:.3f} ({sr['bpp_actual']:.3f} bpp): "
            f"the grouped prior spends {g['bits_per_code'] / sr['bits_per_code'] - 1:+.1%} bits.",
        ]
    return [*lines, "", *where(d, key)]


KEPT_QUANTIZER_RUNS = Path(__file__).resolve().parent / "results" / "quantizers"


def quantizer_section(_docs: dict[str, dict[str, Any]]) -> list[str]:
    """The quantizer family against vector-quantize-pytorch: every run kept so far by
    benchmarks/quantizers.py (one JSON per kind and stack), and the runs still missing."""
    from quantizers import KINDS, searchable  # benchmarks/quantizers.py, beside this script

    rows = {}
    for path in sorted(KEPT_QUANTIZER_RUNS.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("settings", {}).get("budget_min") == 30 and r["settings"].get("max_train_images") is None:
            rows[(r["kind"], r["stack"])] = r
    lines = [
        "## Quantizers: vqkit against vector-quantize-pytorch (30 minutes each on CIFAR-10)",
        "",
        "Each kind at 9 bits per position (8x8 codes), the same networks and training loop, 30 minutes of",
        "training; vqkit's quantizer, then vector-quantize-pytorch's of the same kind in its place",
        "(`benchmarks/quantizers.py`). PSNR, SSIM, usage and perplexity of the (implicit) codebook on the",
        "4,000 CIFAR-10 val images; training images/s, the median over the run, compare only between runs",
        "on the same CPU. PSNR with search: the same model and images when the encoder search picks the",
        "codes (`vqkit compress --search 2`, with no rate term: still 9 raw bits per position) instead of",
        "the nearest code; vqkit's quantizers of one code per position only.",
        "",
        "| kind | stack | PSNR dB | SSIM | usage | perplexity | PSNR with search | training images/s "
        "| finished | CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    missing = []
    for kind in KINDS:
        for stack in ("vqkit", "reference"):
            if (kind, stack) not in rows:
                missing.append(f"{kind} ({stack})")
                continue
            r = rows[(kind, stack)]
            name = "vqkit" if stack == "vqkit" else "vector-quantize-pytorch"
            quality = f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['codebook_usage']:.3f} | {r['perplexity']:.1f}"
            found = r.get("search")
            if found:
                quality += f" | {found['psnr']:.2f} ({found['passes']} passes)"
            else:
                quality += " | not run" if searchable(kind, stack) else " | n/a"
            when, cpu = r["finished"][:16].replace("T", " "), r["machine"].get("cpu_model") or "?"
            lines.append(f"| {kind} | {name} | {quality} | {r['images_per_s']:.0f} | {when} | {cpu} |")
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    lines += [
        "",
        "- results: `benchmarks/results/quantizers/KIND-STACK.json`, one per run (its `command` is the",
        "  worker process that trained it)",
        "- command: `python benchmarks/quantizers.py --budget 30 --kinds KIND ... --reuse [--search 2]`",
        "  (trains the runs not kept yet, one after the other, adds the search figures to those that lack",
        "  them, then prints the whole table)",
    ]
    return lines


def render_benchmarks(docs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# vqkit benchmarks",
        "",
        "<!-- Generated by benchmarks/make_readme.py from benchmarks/results/*.json; do not edit. -->",
        "",
        "Current runs only; earlier runs stay in `benchmarks/results/` and in the git history. Each table",
        "names its results file, the command that wrote it, its date and machine. Figures from different",
        "runs or machines are not comparable with each other, except where a table says why. Regenerate with",
        "`python benchmarks/make_readme.py`.",
        "",
    ]
    sections: list[Callable[[dict[str, dict[str, Any]]], list[str]]] = [
        kodak_section,
        cifar_section,
        quality_section,
        prior_section,
        denoise_section,
        probe_section,
        codec_speed_section,
        quantizer_section,
        speed_section,
        reliability_section,
    ]
    for section in sections:
        lines += [*section(docs), ""]
    return "\n".join(lines).rstrip() + "\n"


# ---- README.md's generated blocks -------------------------------------------------------------------


def training_times(docs: dict[str, dict[str, Any]]) -> list[str]:
    demo = docs["demo_recipe"]["train"]["time_budget_min"]
    cifar = next(p for p in vqkit_points(docs["cifar10"], "cifar10-val") if "budget60" in p["run"])
    rd = next(p for p in vqkit_points(docs["cifar10"], "cifar10-val") if "rd-gpu" in p["run"])
    h200 = next(p for _k, p, _d in kodak_rows(docs) if _k == "kodak")
    cpu = next(p for _k, p, _d in kodak_rows(docs) if _k == "kodak_cpu")
    cores = docs["quality30"]["machine"]["cpus"]
    photo = _card_minutes("photo")
    return [
        f"- `recipes/demo.json`: a {demo:g}-minute wall-clock budget on any CPU (`make demo`).",
        f"- `recipes/cifar10.json`: {docs['quality30']['budget_min']:g} min on {cores} CPU cores for "
        f"{docs['quality30']['final_val']['psnr']:.2f} dB on CIFAR-10 val, "
        f"{minutes(cifar['trained']['train_seconds'])} for {docs['quality60']['final_val']['psnr']:.2f} dB.",
        f"- `recipes/photo.json` (the shipped photo codec): {photo['VQ-VAE']:.0f} min VQ-VAE + "
        f"{photo['prior']:.0f} min prior on {cores} CPU cores.",
        f"- `recipes/photo-f4-k4096.json` (photographs, the points measured without shipped weights): "
        f"{minutes_text(training_chain(h200, docs))} on "
        f"{device_words(h200, docs['kodak']['machine'])}, or {minutes_text(training_chain(cpu, docs))} on "
        f"{cores} CPU cores.",
        f"- `recipes/denoise.json` (the shipped denoiser): {_card_minutes('denoise')['VQ-VAE']:.0f} min on "
        f"{cores} CPU cores.",
        f"- `recipes/rd-*.json` (rate-distortion operating points): "
        f"{minutes(rd['trained']['train_seconds'])} each on {device_words(rd, docs['cifar10']['machine'])}.",
        "- A prior (`vqkit prior train RUN --time-budget MIN`) trains separately; its time is not "
        "counted above.",
    ]


def glance(docs: dict[str, dict[str, Any]]) -> list[str]:
    """At most 8 rows: the current Kodak points, CIFAR-10 compression and quality, denoising, probing."""
    sweeps = classic_kodak(docs)
    rows = []
    for key, p, doc in kodak_rows(docs):
        if key in ("kodak12", "kodak_cpu") and not p.get("search"):
            continue
        n = p["images"]
        vs = []
        for c in CLASSIC:
            k, pts = sweeps[c]
            at = psnr_at(pts if n == docs[k]["datasets"]["kodak"]["images"] else [], p["bpp"])
            at = at if at is not None else psnr_at(classic_points(doc, "kodak", c), p["bpp"])
            vs.append(f"{CODEC_NAMES[c]} {fmt(at)}" if at is not None else f"{CODEC_NAMES[c]} not swept")
        photos = "all 24 Kodak photos" if n == 24 else f"the first {n} Kodak photos"
        files = f"`{CURRENT[key]}`" + (f", `{CURRENT['kodak_all_codecs']}`" if n == 24 else "")
        model = f"coded at scale {p['scale']:g}" if p.get("scale", 1.0) != 1.0 else "scale 1"
        enc = "2-pass search" if p.get("search") else "plain encoder"
        rows.append(
            (
                f"Kodak compression (`recipes/photo-f4-k4096.json`), {model}, {enc}",
                device_words(p, doc["machine"]),
                minutes_text(training_chain(p, docs)) + " + prior",
                f"{p['bpp']:.3f} bpp, {p['psnr']:.2f} dB on {photos}; at that bpp " + ", ".join(vs),
                files,
            )
        )
    cs = max(vqkit_points(docs["cifar10_search"], "cifar10-val"), key=lambda p: p["psnr"])
    c_doc = docs["cifar10"]
    need = ", ".join(
        f"{CODEC_NAMES[c]} {fmt(bpp_for(classic_points(c_doc, 'cifar10-val', c), cs['psnr']))}"
        for c in CLASSIC
    )
    rows.append(
        (
            "CIFAR-10 compression (`recipes/cifar10.json`), 2-pass search",
            device_words(cs, docs["cifar10_search"]["machine"]),
            minutes_text(training_chain(cs, docs)) + " + prior",
            f"{cs['bpp']:.3f} bpp, {cs['psnr']:.2f} dB on CIFAR-10 val; bpp for that PSNR: {need}",
            f"`{CURRENT['cifar10_search']}`, `{CURRENT['cifar10']}`",
        )
    )
    q = docs["quality30"]
    rows.append(
        (
            "CIFAR-10 reconstruction (`recipes/cifar10.json`)",
            f"{q['machine']['cpus']} CPU cores",
            minutes(60 * q["budget_min"]) + " VQ-VAE",
            f"{q['final_val']['psnr']:.2f} dB, SSIM {q['final_val']['ssim']:.3f}, "
            f"perplexity {q['final_val']['perplexity']:.0f} of {q['final_val']['codebook_size']} codes",
            f"`{CURRENT['quality30']}`",
        )
    )
    lines = [
        "| what | trained on | training time | result | results file | reproducible from a clone? |",
        "|---|---|---|---|---|---|",
    ]
    for what, dev, time, result, files in rows[:8]:
        place = "a GPU (`benchmarks/gpu_photo.sh`)" if "NVIDIA" in dev else "a CPU"
        repro = f"no weights ship: retrain on {place}, then run the file's command"
        lines.append(f"| {what} | {dev} | {time} | {result} | {files} | {repro} |")
    return lines + shipped_rows()


def shipped_rows() -> list[str]:
    """One row per shipped model, from its card: these figures a clone reproduces with no training."""
    from vqkit.runs import shipped
    from vqkit.zoo import cards

    lines = []
    for name, model in sorted(shipped.registry().items()):
        c = cards.checked_card(model)
        time = " + ".join(
            f"{v:.0f} min {k}" for k, v in c["minutes"].items() if k not in ("data", "evaluation")
        )
        files = ", ".join(sorted({f"`{f['results']}`" for f in c["figures"]}))
        lines.append(f"| shipped model `{name}`: {c['task']} | {c['device']} | {time} | {c['quality']}; "
                     f"{c['rate']} | {files} | yes: it ships (`vqkit models {name}`) |")  # fmt: skip
    return lines


def shipped_models(docs: dict[str, dict[str, Any]]) -> list[str]:
    """The models in the package's registry, from their cards (the same table as docs/models.md)."""
    from vqkit.zoo import cards

    rows = cards.listing_rows(local=False)
    if not rows:
        return ["No models ship yet."]
    lines = ["| " + " | ".join(cards.LISTING_HEADER) + " |", "|" + "---|" * len(cards.LISTING_HEADER)]
    return lines + ["| " + " | ".join((f"`{r[0]}`", *r[1:])) + " |" for r in rows]


def render_block(name: str, docs: dict[str, dict[str, Any]]) -> list[str]:
    blocks = {
        "shipped-models": shipped_models,
        "training-times": training_times,
        "results-at-a-glance": glance,
    }
    return blocks[name](docs)


def update_readme(text: str, docs: dict[str, dict[str, Any]]) -> str:
    for name in BLOCKS:
        start = f"<!-- begin {name}: generated by benchmarks/make_readme.py -->"
        end = f"<!-- end {name} -->"
        head, sep, rest = text.partition(start)
        if not sep or end not in rest:
            raise SystemExit(f"README.md lacks the markers of the generated block {name!r}")
        _, _, tail = rest.partition(end)
        text = "\n".join([head + start, *render_block(name, docs), end]) + tail
    return text


# ---- entry ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if any generated file is stale")
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (tests use a copy)")
    a = p.parse_args(argv)
    docs = load(a.root)
    bench_md = a.root / "benchmarks" / "README.md"
    readme = a.root / "README.md"
    png = a.root / "benchmarks" / "results" / PLOT
    want_bench = render_benchmarks(docs)
    want_readme = update_readme(readme.read_text(), docs)
    data = plot_data(docs)
    if a.check:
        stale = [str(f.relative_to(a.root)) for f, w in ((bench_md, want_bench), (readme, want_readme))
                 if not f.exists() or f.read_text() != w]  # fmt: skip
        if not plot_is_current(data, png):
            stale.append(str(png.relative_to(a.root)))
        for f in stale:
            print(f"stale: {f} (run python benchmarks/make_readme.py)", file=sys.stderr)
        return 1 if stale else 0
    bench_md.write_text(want_bench)
    readme.write_text(want_readme)
    if not plot_is_current(data, png):
        draw(data, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
