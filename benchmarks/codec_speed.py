"""The codec's speed and rate with the grouped prior's integer network, beside the serial prior on the
same VQ-VAE and beside WebP, AVIF and JPEG XL, all in one run.

Three parts (model loaded before any timing; medians over images):

1. Kodak (24 photos): ``compress`` (plain encoding, no search) and ``decompress`` seconds per photo
   with the grouped prior; the same with the serial prior on the first ``--serial-images`` photos
   (it takes tens of seconds a photo); WebP, AVIF and JPEG XL encode/decode seconds at one mid
   setting each; bits per code and actual bits per pixel of both priors on the same photos.
2. CIFAR-10 val (4,000 files of one image): decoding all files together (``decompress_many``) and
   one call per file, in images per second; the same for the serial prior on ``--serial-files``.
3. Rate, CIFAR-10 val: bits per code and actual bpp of both priors on the first ``--rate-images``.

``--grouped RUN`` holds a grouped prior (model.kind=grouped, with its integer network), ``--serial RUN``
a serial prior of the same VQ-VAE (checked by the model fingerprint). Prints tables; writes JSON
(machine, command, date) to benchmarks/results/codec_speed-DATE.json.

    .venv/bin/python benchmarks/codec_speed.py --grouped benchmarks/runs/entropy_designs/2x2 \\
        --serial benchmarks/runs/entropy_designs/serial
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import common
from rate_distortion import classic
from vqkit.codec import Coding, compress_images, decompress, decompress_many
from vqkit.codec.files import read_inputs
from vqkit.codec.search import DEFAULT_GROUPED, SearchConfig
from vqkit.data import to_float
from vqkit.metrics import psnr_per_image
from vqkit.runs import Run, layout, model_fingerprint

PEERS = {"webp": 75.0, "avif": 55.0, "jxl": 3.0}  # one mid setting each (rate_distortion.SETTINGS)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def psnr(decoded: np.ndarray, image: np.ndarray) -> float:
    """PSNR (dB) of one decoded (H, W, C) uint8 image against the original, as vqkit measures it."""
    a, b = (to_float(torch.from_numpy(np.array(x[None]))) for x in (image, decoded))
    return float(psnr_per_image(a, b)[0])


def per_image(
    coding: Coding, images: Sequence[np.ndarray], model: str, search: SearchConfig | None = None
) -> dict[str, Any]:
    """Compress (with ``search``, if given) and decompress each image alone: seconds per image
    (median), bits per code, bpp and the mean PSNR of the decoded images."""
    enc, dec, quality, bits, codes, size, pixels = [], [], [], 0.0, 0, 0, 0
    for image in images:
        result, t_enc = timed(
            lambda im=image: compress_images(
                coding, [im], entropy_model=model, quality=False, search=search, progress=False
            )
        )
        out, t_dec = timed(lambda data=result.files[0]: decompress(coding, data))
        enc.append(t_enc)
        dec.append(t_dec)
        quality.append(psnr(out[0], image))
        bits += sum(r.codes_bits_estimated for r in result.reports)
        codes += sum(int(np.prod(r.grid)) for r in result.reports)
        size += len(result.files[0])
        pixels += image.shape[0] * image.shape[1]
    return {"images": len(images), "encode_s_median": statistics.median(enc),
            "decode_s_median": statistics.median(dec), "bits_per_code": bits / codes,
            "bpp_actual": 8 * size / pixels, "psnr_mean": statistics.fmean(quality),
            "search": None if search is None else dataclasses.asdict(search)}  # fmt: skip


def files_throughput(coding: Coding, images: Sequence[np.ndarray], model: str, lone: int) -> dict[str, Any]:
    """One file per image: decoding them all in one call, and ``lone`` of them one call each."""
    result = compress_images(coding, list(images), entropy_model=model, quality=False)
    _, t_all = timed(lambda: decompress_many(coding, result.files))
    few = result.files[:lone]
    _, t_lone = timed(lambda: [decompress(coding, f) for f in few])
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    codes = sum(int(np.prod(r.grid)) for r in result.reports)
    return {"files": len(result.files), "together_images_per_s": len(result.files) / t_all,
            "lone_files": len(few), "lone_images_per_s": len(few) / t_lone,
            "bits_per_code": sum(r.codes_bits_estimated for r in result.reports) / codes,
            "bpp_actual": 8 * sum(len(f) for f in result.files) / pixels}  # fmt: skip


def peers(images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for codec, setting in PEERS.items():
        try:
            encode, decode = classic(codec, setting)
        except ImportError as e:  # a codec library that is not installed: said, not hidden
            rows.append({"codec": codec, "setting": setting, "error": str(e)})
            continue
        enc, dec, quality, size = [], [], [], 0
        for image in images:
            data, t_enc = timed(lambda im=image, f=encode: f(im))
            out, t_dec = timed(lambda d=data, f=decode: f(d))
            quality.append(psnr(out, image))
            enc.append(t_enc)
            dec.append(t_dec)
            size += len(data)
        pixels = sum(im.shape[0] * im.shape[1] for im in images)
        rows.append({"codec": codec, "setting": setting, "encode_s_median": statistics.median(enc),
                     "decode_s_median": statistics.median(dec), "bpp_actual": 8 * size / pixels,
                     "psnr_mean": statistics.fmean(quality)})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grouped", type=Path, required=True, help="run folder with a grouped prior")
    p.add_argument("--serial", type=Path, help="run folder with a serial prior of the same VQ-VAE")
    p.add_argument("--kodak", default=str(common.SHARED_DATA / "kodak"))
    p.add_argument("--cifar", default=str(common.SHARED_DATA / "cifar10/val"))
    p.add_argument("--max-kodak", type=int, default=24)
    p.add_argument("--max-cifar", type=int, default=4000)
    p.add_argument("--lone-files", type=int, default=500, help="files decoded one call each (grouped)")
    p.add_argument("--serial-images", type=int, default=4, help="Kodak photos coded with the serial prior")
    p.add_argument("--serial-files", type=int, default=200, help="CIFAR files coded with the serial prior")
    p.add_argument("--rate-images", type=int, default=4000, help="CIFAR images of the rate comparison")
    p.add_argument("--search", default=None, metavar="default|PASSES",
                   help="also compress Kodak with a search: 'default' (what `vqkit compress` runs "
                        "with a grouped prior) or that many passes of SearchConfig's defaults")  # fmt: skip
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    when = datetime.now().astimezone()
    grouped = Coding(Run.load(a.grouped, "cpu"))
    if grouped.grouped() is None:
        raise SystemExit(f"{a.grouped} has no grouped prior")
    serial = None
    if a.serial is not None:
        if model_fingerprint(a.serial) != model_fingerprint(a.grouped):
            raise SystemExit(f"{a.serial} and {a.grouped} hold different VQ-VAEs")
        serial = Coding(Run.load(a.serial, "cpu"))
        if serial.prior() is None:
            raise SystemExit(f"{a.serial} has no serial prior")
    kodak, _, _ = read_inputs([a.kodak], a.max_kodak, strict=True)
    cifar, _, _ = read_inputs([a.cifar], a.max_cifar, strict=True)

    doc: dict[str, Any] = {"benchmark": "codec_speed", "date": when.isoformat(timespec="seconds"),
                           "command": " ".join([Path(sys.executable).name, *sys.argv]),
                           "machine": common.machine(), "grouped_run": str(a.grouped),
                           "serial_run": None if a.serial is None else str(a.serial),
                           "integer_prior": grouped.require_grouped().prior.info,
                           "priors": {"grouped": prior_made(a.grouped)}}  # fmt: skip
    if a.serial is not None:
        doc["priors"]["serial"] = prior_made(a.serial)
    compress_images(grouped, kodak[:1], entropy_model="grouped", quality=False)  # warm-up
    doc["kodak"] = {"grouped": per_image(grouped, kodak, "grouped"), "peers": peers(kodak)}
    if a.search:
        config = DEFAULT_GROUPED if a.search == "default" else SearchConfig(passes=int(a.search))
        doc["kodak"]["grouped_search"] = per_image(grouped, kodak, "grouped", config)
        doc["kodak"]["grouped_search"]["search_name"] = a.search
    if serial is not None:
        few = kodak[: a.serial_images]
        doc["kodak"]["serial"] = per_image(serial, few, "prior")
        doc["kodak"]["grouped_on_serial_images"] = per_image(grouped, few, "grouped")
    doc["cifar"] = {"grouped": files_throughput(grouped, cifar, "grouped", a.lone_files)}
    if serial is not None:
        doc["cifar"]["serial"] = files_throughput(serial, cifar[: a.serial_files], "prior", a.serial_files)
        doc["cifar"]["serial_rate"] = rate_only(serial, cifar[: a.rate_images], "prior")
        doc["cifar"]["grouped_rate"] = rate_only(grouped, cifar[: a.rate_images], "grouped")
    report(doc)
    common.write_result(doc, "codec_speed", when, a.out)
    return 0


def prior_made(run: Path) -> dict[str, Any]:
    """How the run's prior was trained (its prior_config.json): the command line and the steps, so the
    results file says which prior it measured."""
    saved = json.loads((run / layout.PRIOR_CONFIG_FILE).read_text())
    return {"argv": saved.get("argv"), "step": saved.get("step"), "prior": saved.get("prior")}


def rate_only(coding: Coding, images: Sequence[np.ndarray], model: str) -> dict[str, Any]:
    result = compress_images(coding, list(images), entropy_model=model, quality=False)
    codes = sum(int(np.prod(r.grid)) for r in result.reports)
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    bits = sum(r.codes_bits_estimated for r in result.reports)
    return {"images": len(images), "bits_per_code": bits / codes,
            "bpp_actual": 8 * sum(len(f) for f in result.files) / pixels}  # fmt: skip


def report(doc: dict[str, Any]) -> None:
    k = doc["kodak"]
    on_serial = k.get("serial", {}).get("images", 0)
    print(f"\nKodak ({k['grouped']['images']} photos; serial prior on {on_serial}), s per photo, median")
    print(f"{'codec':28} {'encode s':>9} {'decode s':>9} {'bits/code':>10} {'bpp':>7} {'PSNR':>6}")
    rows = [("vqkit grouped (integer)", k["grouped"])]
    if "grouped_search" in k:
        name = k["grouped_search"].get("search_name") or k["grouped_search"]["search"]["passes"]
        rows.append((f"vqkit grouped, search {name}", k["grouped_search"]))
    if "serial" in k:
        rows += [
            ("vqkit grouped, same photos", k["grouped_on_serial_images"]),
            ("vqkit serial prior", k["serial"]),
        ]
    for name, r in rows:
        quality = r.get("psnr_mean", math.nan)
        print(f"{name:28} {r['encode_s_median']:>9.3f} {r['decode_s_median']:>9.3f} "
              f"{r['bits_per_code']:>10.4f} {r['bpp_actual']:>7.4f} {quality:>6.2f}")  # fmt: skip
    for r in k["peers"]:
        if "error" in r:
            print(f"{r['codec']:28} not measured: {r['error']}")
            continue
        print(f"{r['codec'] + ' ' + format(r['setting'], 'g'):28} {r['encode_s_median']:>9.3f} "
              f"{r['decode_s_median']:>9.3f} {'':>10} {r['bpp_actual']:>7.4f} "
              f"{r.get('psnr_mean', math.nan):>6.2f}")  # fmt: skip
    c = doc["cifar"]
    print("\nCIFAR-10 val, one file per image: images per second decoding")
    print(f"{'prior':10} {'files':>6} {'together/s':>11} {'lone/s':>8} {'bits/code':>10} {'bpp':>7}")
    for name in ("grouped", "serial"):
        if name in c:
            r = c[name]
            print(f"{name:10} {r['files']:>6} {r['together_images_per_s']:>11.1f} "
                  f"{r['lone_images_per_s']:>8.1f} {r['bits_per_code']:>10.4f} "
                  f"{r['bpp_actual']:>7.4f}")  # fmt: skip
    if "serial_rate" in c:
        s, g = c["serial_rate"], c["grouped_rate"]
        print(f"rate on all {s['images']} val images: grouped {g['bits_per_code']:.4f} bits/code "
              f"({g['bpp_actual']:.4f} bpp) vs serial {s['bits_per_code']:.4f} ({s['bpp_actual']:.4f} bpp): "
              f"{g['bits_per_code'] / s['bits_per_code'] - 1:+.2%}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
