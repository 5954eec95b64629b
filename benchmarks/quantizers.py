"""The quantizer family against vector-quantize-pytorch's implementations, in the same networks and
the same training loop, for the same wall-clock budget on CIFAR-10.

    python benchmarks/quantizers.py --budget 30                 # every kind, both stacks (hours)
    python benchmarks/quantizers.py --budget 2 --kinds fsq lfq  # a quick look at two kinds
    python benchmarks/quantizers.py --budget 30 --kinds fsq --reuse  # add fsq; keep finished runs

Each finished run's figures (budget, data, date, machine) are also kept in --kept
(benchmarks/results/quantizers/KIND-STACK.json, committed: run folders are git-ignored and do not
outlive the machine). --reuse keeps every kept run whose budget and data match this command's, so the
30-minute runs can be spread over several sittings and the last one still prints and writes the whole
table; the table names each run's date and CPU, and a kind's speed ratio is only quoted when both of
its runs had the same CPU.

For each kind (9 bits per position at 8x8 codes: vq K=512, vq with the rotation trick, fsq levels
8x8x8, lfq and bsq 9 bits, simvq K=512, rvq 3 stages of K=8) two runs, one after the other, each in
its own process:
  vqkit      recipes/cifar10-KIND.json through vqkit.training.train
  reference  the same recipe, networks and loop with vector-quantize-pytorch's quantizer of that kind
             (VectorQuantize, VectorQuantize(rotation_trick=True), FSQ, LFQ, LFQ(spherical=True),
             SimVQ, ResidualVQ(quantize_dropout=True)) at its defaults apart from the sizes, wrapped in
             vqkit's quantizer contract
(codebook usage and perplexity of rvq: the means over its stages)
Then every model is evaluated on the lossless CIFAR-10 val images: PSNR, SSIM, codebook usage and
perplexity over the (implicit) codebook, and the training images/s from its metrics. Prints a table
with vqkit / reference ratios and writes benchmarks/results/quantizers-DATE.json.

--search P adds, for each vqkit run of one code per position (not rvq; not the reference stack, whose
quantizers cannot list candidate codes), the PSNR and SSIM when the encoder search picks the codes
(vqkit compress --search: P raster passes over the 4 nearest codes per position, scored by the decoded
pixels with no rate term, so still 9 raw bits per position) instead of the nearest code. It is worked
out from the run folder under --work and added to the kept figures, so --reuse --search adds it to
runs finished earlier.

Needs the optional extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, SHARED_DATA, machine, write_result
from vqkit.codec.search import SearchConfig, search_grids
from vqkit.config import QuantizerConfig, RunConfig, load_config
from vqkit.data import iter_batches, load_dataset, to_float, to_uint8_hwc
from vqkit.metrics import psnr_per_image, ssim_per_image
from vqkit.models import VQVAE
from vqkit.quantizers import Quantizer, QuantizerOutput
from vqkit.runs import Run
from vqkit.training import evaluate, train

KINDS = ("vq", "vq-rotation", "fsq", "lfq", "bsq", "simvq", "rvq")
RECIPES = {kind: ROOT / "recipes" / f"cifar10-{kind}.json" for kind in KINDS}
RECIPES["vq"] = ROOT / "recipes" / "cifar10.json"


def reference_module(kind: str, q: QuantizerConfig) -> torch.nn.Module:
    """vector-quantize-pytorch's quantizer of ``kind`` for latents of q.code_dim channels."""
    import vector_quantize_pytorch as vqp

    dim, k = q.code_dim, q.codebook_size
    if kind in ("vq", "vq-rotation"):
        return vqp.VectorQuantize(dim=dim, codebook_size=k, decay=0.99, commitment_weight=q.beta,
                                  accept_image_fmap=True, rotation_trick=kind == "vq-rotation")  # fmt: skip
    if kind == "fsq":
        return vqp.FSQ(levels=list(q.levels), dim=dim, channel_first=True)
    if kind in ("lfq", "bsq"):
        spherical = kind == "bsq"  # its BSQ: LFQ on the unit sphere
        return vqp.LFQ(dim=dim, codebook_size=k, entropy_loss_weight=q.entropy_weight,
                       commitment_loss_weight=q.beta, channel_first=True, spherical=spherical)  # fmt: skip
    if kind == "simvq":
        return vqp.SimVQ(dim=dim, codebook_size=k, channel_first=True)
    if kind == "rvq":  # its quantizer dropout draws one prefix per batch; vqkit's, one per sample
        return Sequence2d(vqp.ResidualVQ(dim=dim, num_quantizers=q.stages, codebook_size=k, decay=0.99,
                                         commitment_weight=q.beta, quantize_dropout=True))  # fmt: skip
    raise ValueError(kind)


class Sequence2d(torch.nn.Module):
    """A quantizer of (B, N, D) sequences on (B, D, h, w) maps: ResidualVQ's accept_image_fmap fails in
    vector-quantize-pytorch 1.32 (its residuals keep the map layout). Returns (quantized (B, D, h, w),
    indices (B, h, w, S), losses)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, d, h, w = z.shape
        quantized, indices, losses = self.module(z.permute(0, 2, 3, 1).reshape(b, h * w, d))
        return quantized.reshape(b, h, w, d).permute(0, 3, 1, 2), indices.reshape(b, h, w, -1), losses


class ReferenceQuantizer(Quantizer):
    """A vector-quantize-pytorch module behind vqkit's quantizer contract, so that it trains in
    vqkit's loop and evaluates with vqkit's metrics. Only what training and evaluation use."""

    discrete = True

    def __init__(self, module: torch.nn.Module, codebook_size: int, stages: int = 1) -> None:
        super().__init__()
        self.module = module
        self.k = codebook_size
        self.s = stages
        self.restarts_total = torch.zeros((), dtype=torch.long)

    @property
    def codebook_size(self) -> int:
        return self.k

    @property
    def stages(self) -> int:
        return self.s

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        with torch.autocast(z.device.type, enabled=False):  # float32, as vqkit's quantizers
            out = self.module(z.float())
        quantized, indices = out[0], out[1]
        loss = out[2] if len(out) > 2 else None
        losses = {}
        if loss is not None:
            losses["quantizer"] = loss.sum() if loss.ndim else loss
        if self.s > 1:  # ResidualVQ's (B, h, w, S) -> vqkit's (B, S, h, w)
            # its dropped stages hold -1 in training; code 0 there keeps the loop's usage bincount
            # valid (a training-log figure only: evaluation runs without dropout)
            indices = indices.permute(0, 3, 1, 2).clamp_min(0)
        return QuantizerOutput(
            quantized.to(z.dtype),
            indices.long().reshape(z.shape[0], *([self.s] if self.s > 1 else []), *z.shape[2:]),
            losses,
        )

    def frozen(self, z: torch.Tensor) -> QuantizerOutput:
        return self.forward(z)


def worker(kind: str, stack: str, budget: float, out: Path, a: argparse.Namespace) -> None:
    """Train one model in this process and write its figures to ``out``/result.json."""
    torch.manual_seed(0)
    cfg: RunConfig = load_config(RECIPES[kind], [f"data.spec={a.train}"])
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, time_budget_min=budget))
    if stack == "reference":
        import vqkit.models.vqvae as vqvae_module

        module = reference_module(kind, cfg.model.quantizer)
        vqvae_module.build_quantizer = lambda q: ReferenceQuantizer(module, q.codebook_size, q.stages)  # type: ignore[assignment]
    models: list[VQVAE] = []
    data = load_dataset(a.train, max_images=a.max_train_images)
    result = train(cfg, out / "run", data=data, progress=False,
                   on_step=lambda step, model: models.append(model) if not models else None)  # fmt: skip
    val = load_dataset(a.val, max_images=a.max_val_images)
    ev = evaluate(models[0], val.images, device=torch.device("cpu"))
    rates = [
        r["images_per_s"]
        for r in map(json.loads, (out / "run" / "metrics.jsonl").read_text().splitlines())
        if r.get("type") == "train"
    ]
    when = datetime.now().isoformat(timespec="seconds")
    doc = {"kind": kind, "stack": stack, "settings": settings(a, budget), "finished": when,
           "machine": machine(), "command": [sys.executable, *sys.argv], "steps": result.step,
           "images_per_s": float(np.median(rates)), **ev}  # fmt: skip
    if a.search and searchable(kind, stack):
        doc["search"] = searched(out / "run", val.images, a.search)
    text = json.dumps(doc, indent=1) + "\n"
    (out / "result.json").write_text(text)
    a.kept.mkdir(parents=True, exist_ok=True)
    (a.kept / f"{kind}-{stack}.json").write_text(text)


def searched(run_dir: Path, images: list[np.ndarray], passes: int, batch: int = 250) -> dict[str, Any]:
    """PSNR and SSIM of ``images`` (H, W, C uint8, one size) when the encoder search picks the codes:
    ``passes`` raster passes over the 4 nearest codes, distortion only (lambda 0)."""
    run = Run.load(run_dir, device="cpu", precision="fp32")  # as evaluate() scores the nearest codes
    config = SearchConfig(passes=passes, candidates=4, lmbda=0.0, rate="static")
    psnrs, ssims = [], []
    t = time.perf_counter()
    for chunk in iter_batches(images, batch):
        ref = np.stack(chunk)  # (B, H, W, C)
        grids = torch.from_numpy(search_grids(run, ref, config))  # (B, h, w)
        with run.inference():
            recon = run.model.decode_indices(grids.to(run.device), size=ref.shape[1:3]).float().cpu()
        psnrs.append(psnr_per_image(to_float(torch.from_numpy(ref)), recon).numpy())
        ssims.append(ssim_per_image(ref, to_uint8_hwc(recon)))
        done = sum(map(len, psnrs))
        print(f"  {done}/{len(images)} images searched, {time.perf_counter() - t:.0f} s", flush=True)
    # its own date, machine and command: the search may run sittings after the training did
    return {"passes": passes, "candidates": 4, "lmbda": 0.0, "psnr": float(np.concatenate(psnrs).mean()),
            "ssim": float(np.concatenate(ssims).mean()), "seconds": time.perf_counter() - t,
            "finished": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
            "command": [sys.executable, *sys.argv]}  # fmt: skip


def searchable(kind: str, stack: str) -> bool:
    """Whether the search applies to a run: vqkit's quantizers (the reference's list no candidate
    codes) of one code per position (not rvq's stages)."""
    return stack == "vqkit" and kind != "rvq"


@functools.cache
def val_images(spec: str, max_images: int | None) -> list[np.ndarray]:
    """The evaluation images, read once however many kept runs --search scores."""
    return load_dataset(spec, max_images=max_images).images


def add_search(row: dict[str, Any], a: argparse.Namespace, kept: Path) -> None:
    """Give a kept run's figures the --search ones, from its run folder, unless they are there."""
    if (row.get("search") or {}).get("passes") == a.search:
        return
    run_dir = a.work / f"{row['kind']}-{row['stack']}" / "run"
    if not (run_dir / "model.safetensors").is_file():
        print(f"  no run folder {run_dir}: no search figures for {row['kind']}", flush=True)
        return
    print(f"searching the codes of {row['kind']} ({row['stack']})", flush=True)
    row["search"] = searched(run_dir, val_images(a.val, a.max_val_images), a.search)
    kept.write_text(json.dumps(row, indent=1) + "\n")


def settings(a: argparse.Namespace, budget: float) -> dict[str, Any]:
    """What makes two runs of one kind and stack comparable: the budget and the data."""
    return {"budget_min": budget, "train": a.train, "val": a.val, "max_train_images": a.max_train_images,
            "max_val_images": a.max_val_images}  # fmt: skip


def finished(path: Path, want: dict[str, Any]) -> dict[str, Any] | None:
    """The kept figures at ``path`` of a finished run made with the settings ``want``, else None."""
    if not path.is_file():
        return None
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc if doc.get("settings") == want else None


def searched_psnr(row: dict[str, Any]) -> str:
    """The PSNR with searched codes, or "-" where the run has none."""
    found = row.get("search")
    return f"{found['psnr']:.2f}" if found else "-"


def cpu(row: dict[str, Any]) -> str:
    """The CPU model a run's figures came from."""
    return str(row.get("machine", {}).get("cpu_model") or "?")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=30.0, help="minutes of training per model (default 30)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="kinds to compare")
    p.add_argument("--no-reference", action="store_true", help="vqkit only (no vector-quantize-pytorch)")
    p.add_argument("--train", default=str(SHARED_DATA / "cifar10" / "train"), help="training data spec")
    p.add_argument("--val", default=str(SHARED_DATA / "cifar10" / "val"), help="evaluation data spec")
    p.add_argument("--max-train-images", type=int, help="use the first N training images")
    p.add_argument("--max-val-images", type=int, help="evaluate on the first N val images")
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "quantizers",
                   help="where the runs go (git-ignored)")  # fmt: skip
    p.add_argument("--kept", type=Path, default=ROOT / "benchmarks" / "results" / "quantizers",
                   help="where each finished run's figures are kept (committed)")  # fmt: skip
    p.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/quantizers-DATE.json)")
    p.add_argument("--reuse", action="store_true",
                   help="keep finished runs in --kept with this budget and data (see above)")  # fmt: skip
    p.add_argument("--search", type=int, default=0, metavar="P",
                   help="also score vqkit's runs with P-pass encoder-searched codes (see above)")  # fmt: skip
    p.add_argument("--worker", nargs=2, metavar=("KIND", "STACK"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.worker[0], a.worker[1], a.budget, a.work / f"{a.worker[0]}-{a.worker[1]}", a)
        return 0
    when = datetime.now()
    stacks = ["vqkit"] if a.no_reference else ["vqkit", "reference"]
    rows: list[dict[str, Any]] = []
    passthrough = ["--budget", str(a.budget), "--train", a.train, "--val", a.val, "--work", str(a.work),
                   "--kept", str(a.kept)]  # fmt: skip
    if a.search:
        passthrough += ["--search", str(a.search)]
    for flag in ("max_train_images", "max_val_images"):
        if getattr(a, flag) is not None:
            passthrough += [f"--{flag.replace('_', '-')}", str(getattr(a, flag))]
    for kind in a.kinds:
        for stack in stacks:
            out = a.work / f"{kind}-{stack}"
            kept = finished(a.kept / f"{kind}-{stack}.json", settings(a, a.budget)) if a.reuse else None
            if kept is not None:
                print(f"keeping {kind} ({stack}): finished {kept['finished']}", flush=True)
                if a.search and searchable(kind, stack):
                    add_search(kept, a, a.kept / f"{kind}-{stack}.json")
                rows.append(kept)
                continue
            subprocess.run(["rm", "-rf", str(out)], check=True)
            print(f"training {kind} ({stack}) for {a.budget:g} min", flush=True)
            done = subprocess.run([sys.executable, __file__, "--worker", kind, stack, *passthrough])
            if done.returncode != 0:
                rows.append({"kind": kind, "stack": stack, "error": f"exit {done.returncode}"})
                continue
            rows.append(json.loads((out / "result.json").read_text()))
    print(f"\n{'kind':<12} {'stack':<10} {'PSNR':>6} {'SSIM':>6} {'usage':>6} {'perpl.':>7} {'img/s':>7}"
          f" {'search':>7}  finished on")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"{r['kind']:<12} {r['stack']:<10} failed: {r['error']}")
            continue
        print(f"{r['kind']:<12} {r['stack']:<10} {r['psnr']:>6.2f} {r['ssim']:>6.3f} "
              f"{r['codebook_usage']:>6.3f} {r['perplexity']:>7.1f} {r['images_per_s']:>7.0f}"
              f" {searched_psnr(r):>7}  {r['finished'][:16]} {cpu(r)}")  # fmt: skip
    ratios = []
    for kind in a.kinds:
        pair = {r["stack"]: r for r in rows if r["kind"] == kind and "error" not in r}
        if len(pair) == 2:
            v, ref = pair["vqkit"], pair["reference"]
            # Times from two CPUs do not divide: the speed ratio needs both runs on one CPU.
            same_cpu = cpu(v) == cpu(ref)
            speed = v["images_per_s"] / ref["images_per_s"] if same_cpu else None
            ratios.append({"kind": kind, "psnr_difference_db": v["psnr"] - ref["psnr"], "speed_ratio": speed})
            print(
                f"{kind}: vqkit - reference PSNR {ratios[-1]['psnr_difference_db']:+.2f} dB, "
                + (f"speed x{speed:.2f}" if speed is not None else "speed: runs on different CPUs")
            )
    doc = {"benchmark": "quantizers", "date": when.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": machine(), "budget_min": a.budget,
           "rows": rows, "ratios": ratios}  # fmt: skip
    write_result(doc, "quantizers", when, a.out)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
