"""What a calibrated prior saves in real .vqk files: the same images coded with the run's prior as
saved (calibrated logit scale) and with its raw logits (scale 1), each image its own file, headers
counted. The codec codes without class labels, so this also checks that a scale fitted with labels
pays without them. Prints a table; writes JSON (machine, command, date) to
benchmarks/results/prior_calibration-DATE.json.

    .venv/bin/python benchmarks/prior_calibration.py --run benchmarks/runs/cifar10/budget60-aug2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import common
from vqkit.codec import Coding, compress_images
from vqkit.codec.files import read_inputs
from vqkit.priors import load_prior


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder with a calibrated prior")
    p.add_argument("--data", default=str(common.SHARED_DATA / "cifar10/val"), help="images to code")
    p.add_argument("--max-images", type=int, help="code only the first N images")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    images, _, _ = read_inputs([a.data], a.max_images, strict=True)
    prior = load_prior(a.run)
    scale = float(prior.logit_scale)
    if scale == 1.0:
        raise SystemExit(f"{a.run}: the prior is not calibrated (logit scale 1); run `vqkit prior calibrate`")
    rows: list[dict[str, Any]] = []
    for name, value in (("raw", 1.0), ("calibrated", scale)):
        prior.logit_scale.fill_(value)
        t0 = time.perf_counter()
        result = compress_images(Coding(a.run, prior), images, entropy_model="prior", quality=False)
        seconds = time.perf_counter() - t0
        rows.append({"logits": name, "logit_scale": value, "images_per_s": len(images) / seconds,
                     **result.summary()})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    raw, cal = rows
    saving = 1 - cal["bpp_actual"] / raw["bpp_actual"]
    print(
        "\n| logits | scale | bpp estimated | bpp actual (files, headers) | images/s |\n|---|---|---|---|---|"
    )
    for r in rows:
        cells = f"{r['logit_scale']:.4f} | {r['bpp_estimated']:.4f} | {r['bpp_actual']:.4f}"
        print(f"| {r['logits']} | {cells} | {r['images_per_s']:.1f} |")
    print(f"\ncalibration saves {100 * saving:.2f} % of the file bytes on {len(images)} images")
    now = datetime.now()
    doc = {"benchmark": "prior_calibration", "date": now.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": common.machine(), "run": str(a.run),
           "data": a.data, "rows": rows, "saving_actual": saving}  # fmt: skip
    common.write_result(doc, "prior_calibration", now, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
