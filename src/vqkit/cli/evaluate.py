"""vqkit eval: quality and codebook health of a run on a data set (table + JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from vqkit.cli.common import add_device, parser
from vqkit.data import load_dataset
from vqkit.runs import Run
from vqkit.training.evaluate import evaluate

ROWS = [
    ("num_images", "images", "{:d}"),
    ("psnr", "PSNR (dB, 8-bit)", "{:.3f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("mse", "MSE (0-255)", "{:.3f}"),
    ("codebook_usage", "codebook usage", "{:.4f}"),
    ("perplexity", "perplexity", "{:.1f}"),
    ("dead_codes", "dead codes", "{:d}"),
    ("code_entropy_bits", "code entropy (bits)", "{:.3f}"),
    ("bpp_nominal", "bpp (nominal)", "{:.4f}"),
]


def main(argv: list[str]) -> int:
    p = parser("eval", "Evaluate a run: PSNR, SSIM, MSE, codebook usage, perplexity, dead codes.")
    p.add_argument("run", type=Path)
    p.add_argument("--data", required=True, help="data spec to evaluate on")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--max-images", type=int)
    p.add_argument("--batch-size", type=int, default=256)
    add_device(p)
    a = p.parse_args(argv)
    run = Run.load(a.run, a.device)
    data = load_dataset(a.data, channels=run.channels, max_images=a.max_images)
    result = {"run": str(a.run), "data": a.data, **evaluate(run.model, data.images,
              batch_size=a.batch_size, device=run.device)}  # fmt: skip
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(label) for _, label, _ in ROWS)
    for key, label, fmt in ROWS:
        if key in result:
            print(f"{label:<{width}}  {fmt.format(result[key])}")
    return 0
