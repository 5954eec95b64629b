"""Training, encode and decode throughput of vqkit against the stack a user assembles today.

    python benchmarks/throughput.py [--budget MIN] [--quick] [--device cuda] [--max-train-images N]

Both stacks use the same encoder/decoder (recipes/cifar10.json's networks) and batch size on the
CIFAR-10 training images, for the same wall-clock budget, then are evaluated on the lossless val set:
  vqkit      vqkit.train (uint8 data in memory, batch augmentation, fused distances, channels-last,
             EMA + k-means init + restarts, time-budgeted cosine schedule)
  reference  the same networks with vector-quantize-pytorch's VectorQuantize (EMA; decay 0.99 and
             commitment 0.25 as in the Sonnet CIFAR-10 recipe, its other defaults) in a plain loop:
             float32 TensorDataset + DataLoader(shuffle), random flips, Adam at 3e-4 (Sonnet's lr)
Each stack runs in its own subprocess so peak memory (max RSS) is its own. Then: ablations of the
vqkit loop (channels-last off, torch.compile on) and the cost of one training step against codebook
size (K = 256 .. 8192) and image size. Prints tables; writes benchmarks/results/throughput-<date>.json.
Needs the optional extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, SHARED_DATA, machine
from vqkit import precision
from vqkit.config import RunConfig, load_config
from vqkit.data import load_dataset, to_float
from vqkit.metrics import psnr_per_image
from vqkit.models import VQVAE
from vqkit.networks import Decoder, Encoder
from vqkit.pipeline import train
from vqkit.runs import Run, load_model
from vqkit.training import evaluate

RECIPE = ROOT / "recipes" / "cifar10.json"
SHARED = SHARED_DATA / "cifar10"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Any, x_batches: list[Any], device: torch.device) -> float:
    """Images per second of ``fn`` over the batches (one warm-up batch first; GPU work is waited for)."""
    fn(x_batches[0])
    _sync(device)
    t = time.perf_counter()
    n = 0
    for x in x_batches:
        fn(x)
        n += len(x)
    _sync(device)
    return n / (time.perf_counter() - t)


def _peak_gpu_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def run_vqkit(cfg: RunConfig, budget: float, out: Path, a: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(a.device)
    train_set = load_dataset(a.train, max_images=a.max_train_images)
    val = load_dataset(a.val)
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, spec=str(a.train)),
        train=dataclasses.replace(cfg.train, time_budget_min=budget, device=a.device),
    )
    t = time.perf_counter()
    result = train(cfg, out, data=train_set, progress=False)
    wall = time.perf_counter() - t
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    steps_s = max(r["elapsed_s"] for r in rows if r["type"] == "train")
    model = load_model(out).to(device)
    ev = evaluate(model, val.images, batch_size=256, with_ssim=False, device=device)
    # The product's inference path (vqkit.Run: channels-last, bf16 where the CPU has it natively),
    # from uint8 images to uint8 images, conversions included.
    run = Run.load(out, device)
    chunks = [val.images[i : i + 256] for i in range(0, len(val), 256)]
    codes = [np.stack(run.encode(c)) for c in chunks]
    decoded = np.concatenate([run.decode(c) for c in codes])
    psnr_fast = float(
        psnr_per_image(to_float(torch.from_numpy(val.as_array())), to_float(torch.from_numpy(decoded)))
        .clamp(max=100)
        .mean()
    )
    return {
        "train_images_per_s": result.step * cfg.train.batch_size / steps_s,
        "steps": result.step,
        "wall_s": wall,
        "val_psnr": ev["psnr"],
        "codebook_usage": ev["codebook_usage"],
        "perplexity": ev["perplexity"],
        "val_psnr_inference_path": psnr_fast,
        "inference_precision": str(precision.resolve("auto", device)),
        "encode_images_per_s": _timed(run.encode, chunks, device),
        "decode_images_per_s": _timed(run.decode, codes, device),
        "peak_gpu_mb": _peak_gpu_mb(device),
    }


def run_reference(cfg: RunConfig, budget: float, a: argparse.Namespace) -> dict[str, Any]:
    from vector_quantize_pytorch import VectorQuantize

    device = torch.device(a.device)
    torch.manual_seed(cfg.train.seed)
    train_set = load_dataset(a.train, max_images=a.max_train_images)
    val = load_dataset(a.val)
    images = torch.from_numpy(train_set.as_array()).permute(0, 3, 1, 2).float() / 255
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images), batch_size=cfg.train.batch_size, shuffle=True, drop_last=True
    )
    mc = cfg.model
    enc, dec = Encoder(mc), Decoder(mc)
    vq = VectorQuantize(
        dim=mc.quantizer.code_dim,
        codebook_size=mc.quantizer.codebook_size,
        decay=0.99,
        commitment_weight=0.25,
        accept_image_fmap=True,
    )
    enc, dec, vq = enc.to(device), dec.to(device), vq.to(device)
    params = [*enc.parameters(), *dec.parameters(), *vq.parameters()]
    opt = torch.optim.Adam(params, lr=3e-4)
    steps, t0 = 0, time.perf_counter()
    done = False
    while not done:
        for (x,) in loader:
            x = x.to(device, non_blocking=True)
            flip = torch.rand(len(x), device=device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            quantized, _, commit = vq(enc(x))
            loss = F.mse_loss(dec(quantized), x) + commit.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() - t0 >= budget * 60:
                done = True
                break
    train_s = time.perf_counter() - t0
    enc.eval(), dec.eval(), vq.eval()
    xs = [to_float(torch.from_numpy(val.as_array()[i : i + 256])).to(device) for i in range(0, len(val), 256)]

    @torch.no_grad()
    def encode(x: torch.Tensor) -> torch.Tensor:
        return vq(enc(x))[1]

    @torch.no_grad()
    def decode(idx: torch.Tensor) -> torch.Tensor:
        # With accept_image_fmap the layer maps (B, h, w) indices straight to (B, D, h, w) codes.
        return dec(vq.get_output_from_indices(idx)).clamp(0, 1)

    codes = [encode(x) for x in xs]
    psnr = torch.cat([psnr_per_image(x, decode(c)) for x, c in zip(xs, codes, strict=True)])
    counts = torch.bincount(torch.cat([c.flatten() for c in codes]), minlength=mc.quantizer.codebook_size)
    p = counts.double() / counts.sum()
    nz = p[p > 0]
    return {
        "train_images_per_s": steps * cfg.train.batch_size / train_s,
        "steps": steps,
        "wall_s": train_s,
        "val_psnr": float(psnr.clamp(max=100).mean()),
        "codebook_usage": float((counts > 0).double().mean()),
        "perplexity": float(torch.exp(-(nz * nz.log()).sum())),
        "encode_images_per_s": _timed(encode, xs, device),
        "decode_images_per_s": _timed(decode, codes, device),
        "peak_gpu_mb": _peak_gpu_mb(device),
    }


CPU = torch.device("cpu")


def step_cost(cfg: RunConfig, steps: int = 8, device: torch.device = CPU) -> float:
    """Training images per second for ``cfg`` on random data (no loading), after 2 warm-up steps."""
    if device.type == "cuda":
        steps *= 8  # a GPU step is short: time more of them
    torch.manual_seed(0)
    model = VQVAE(cfg.model).to(device).train()
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)  # type: ignore[call-overload]
    if cfg.train.compile:
        model.encoder.compile()
        model.decoder.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    size = cfg.data.image_size
    x = torch.rand(cfg.train.batch_size, 3, size, size, device=device).contiguous(memory_format=fmt)
    for i in range(steps + 2):
        if i == 2:
            _sync(device)
            t = time.perf_counter()
        with precision.autocast(device, cfg.train.precision):
            loss = model(x).losses["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(device)
    return steps * cfg.train.batch_size / (time.perf_counter() - t)


def child(stack: str, budget: float, out: Path, a: argparse.Namespace) -> None:
    cfg = load_config(RECIPE)
    res = run_vqkit(cfg, budget, out, a) if stack == "vqkit" else run_reference(cfg, budget, a)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--budget", type=float, default=5.0, help="training minutes per stack")
    p.add_argument("--quick", action="store_true", help="skip ablations and scaling")
    p.add_argument("--child", choices=["vqkit", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "throughput")
    p.add_argument("--device", default="cpu", help="torch device for both stacks (cpu, cuda)")
    p.add_argument("--train", default=str(SHARED / "train"), help="training images")
    p.add_argument("--val", default=str(SHARED / "val"), help="evaluation images")
    p.add_argument("--max-train-images", type=int, help="train on the first N images (both stacks)")
    a = p.parse_args()
    if a.child:
        child(a.child, a.budget, a.out / a.child, a)
        return 0

    device = torch.device(a.device)
    stacks: dict[str, dict[str, Any]] = {}
    for stack in ("reference", "vqkit"):
        cmd = [sys.executable, __file__, "--child", stack, "--budget", str(a.budget), "--out", str(a.out),
               "--device", a.device, "--train", a.train, "--val", a.val]  # fmt: skip
        if a.max_train_images:
            cmd += ["--max-train-images", str(a.max_train_images)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{stack} run failed")
        stacks[stack] = json.loads(line[-1][7:])
    ref, ours = stacks["reference"], stacks["vqkit"]
    ratios = {
        k: ours[k] / ref[k] for k in ("train_images_per_s", "encode_images_per_s", "decode_images_per_s")
    }

    cfg = load_config(RECIPE)
    ablations: dict[str, float] = {}
    scaling: list[dict[str, Any]] = []
    if not a.quick:

        def variant(**train_changes: Any) -> RunConfig:
            return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_changes))

        ablations = {
            "default (channels_last, precision auto)": step_cost(cfg, device=device),
            "precision fp32": step_cost(variant(precision="fp32"), device=device),
            "channels_last off": step_cost(variant(channels_last=False), device=device),
            "torch.compile on": step_cost(variant(compile=True), device=device),
        }
        for k in (256, 1024, 4096, 8192):
            q = dataclasses.replace(cfg.model.quantizer, codebook_size=k)
            c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantizer=q))
            scaling.append(
                {"codebook_size": k, "image_size": 32, "train_images_per_s": step_cost(c, device=device)}
            )
        for size in (64, 128):
            c = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=size))
            scaling.append(
                {"codebook_size": 512, "image_size": size, "train_images_per_s": step_cost(c, device=device)}
            )

    print(f"\n{'':26}{'reference':>12}{'vqkit':>12}{'ratio':>8}")
    for key, label in [
        ("train_images_per_s", "train images/s"),
        ("encode_images_per_s", "encode images/s"),
        ("decode_images_per_s", "decode images/s"),
        ("val_psnr", "val PSNR after budget"),
        ("codebook_usage", "codebook usage"),
        ("perplexity", "perplexity"),
        ("peak_rss_mb", "peak memory (MB RSS)"),
        ("peak_gpu_mb", "peak GPU memory (MB)"),
    ]:
        if ref.get(key) is None:
            continue
        print(f"{label:26}{ref[key]:12.2f}{ours[key]:12.2f}{ours[key] / ref[key]:8.2f}")
    if ablations:
        print("\nvqkit training step, images/s (random data, batch from the recipe)")
        for name, v in ablations.items():
            print(f"  {name:40}{v:10.1f}")
        print("\ncost against codebook size and image size (images/s)")
        for row in scaling:
            print(f"  K={row['codebook_size']:<5} {row['image_size']:>3}px {row['train_images_per_s']:10.1f}")
    doc = {
        "benchmark": "throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "budget_min": a.budget,
        "device": a.device,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "train_data": a.train,
        "max_train_images": a.max_train_images,
        "batch_size": cfg.train.batch_size,
        "stacks": stacks,
        "ratios_vqkit_over_reference": ratios,
        "ablations_images_per_s": ablations,
        "scaling": scaling,
        "targets": {"train_ratio": 1.5, "encode_decode_ratio": 2.0},
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    tag = "" if device.type == "cpu" else f"-{device.type}"
    path = out / f"throughput{tag}-{datetime.now(UTC).strftime('%Y%m%d-%H%M')}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
