"""vqkit eval: quality and codebook health of a run on a data set (table + JSON)."""

from __future__ import annotations

from vqkit import precision
from vqkit.cli.common import add_device, add_json, add_run, load_run, parser
from vqkit.data import load_dataset
from vqkit.runs.results import write_result_file
from vqkit.training.evaluate import evaluate

ROWS = [
    ("num_images", "images", "{:d}"),
    ("psnr", "PSNR (dB, 8-bit)", "{:.3f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("mse", "MSE (0-255)", "{:.3f}"),
    ("codebook_usage", "codebook usage", "{:.4f}"),
    ("perplexity", "perplexity", "{:.1f}"),
    ("dead_codes", "dead codes", "{:g}"),  # a mean over the stages of a residual run
    ("code_entropy_bits", "code entropy (bits)", "{:.3f}"),
    ("bpp_nominal", "bpp (nominal)", "{:.4f}"),
]


def main(argv: list[str]) -> int:
    p = parser("eval", "Evaluate a run: PSNR, SSIM, MSE, codebook usage, perplexity, dead codes.")
    add_run(p)
    p.add_argument("--data", required=True, help="data spec to evaluate on")
    add_json(p)
    p.add_argument("--max-images", type=int, help="evaluate on the first this many images")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    add_device(p)
    a = p.parse_args(argv)
    run = load_run(a.run, a.device, a.precision)
    data = load_dataset(a.data, channels=run.channels, max_images=a.max_images)
    # The figures of the model as the other commands run it: under --precision (the quantizer stays fp32).
    with precision.autocast(run.device, a.precision):
        figures = evaluate(run.model, data.images, batch_size=a.batch_size, device=run.device)
    result = {"run": str(a.run), "data": a.data, **figures}
    if a.json:
        write_result_file(a.json, "eval", result)
    width = max(len(label) for _, label, _ in ROWS)
    for key, label, fmt in ROWS:
        if key in result:
            print(f"{label:<{width}}  {fmt.format(result[key])}")
    for stage in result.get("per_stage", []):  # residual VQ: each stage's codebook
        print(
            f"  stage {stage['stage']}: usage {stage['codebook_usage']:.4f}, perplexity "
            f"{stage['perplexity']:.1f}, dead codes {stage['dead_codes']}"
        )
    return 0
