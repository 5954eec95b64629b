"""vqkit rd: rate-distortion of a run's own codec on a data set.

    vqkit rd RUN --data DATA [--scales 0.75,1,1.25] [--entropy-models raw,static,prior] [--json PATH]

Compresses DATA's images with each entropy model the run has (raw; static once fitted; prior once
trained), at each coding scale, exactly as ``vqkit compress`` would, and records per point the bits
per pixel nominal (log2 K per code), estimated (the model's -log2 p) and actual (the files' bytes),
PSNR and SSIM of what decompression gives, and images/s. Writes RUN/rd.json (an "rd" result for
``vqkit report``) and prints a table.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from vqkit.cli.common import add_device, add_run, add_threads, apply_threads, load_run, parser, report_skipped
from vqkit.codec import ENTROPY_CHOICES, Coding
from vqkit.codec.api import SCALE_RANGE
from vqkit.codec.files import read_inputs
from vqkit.codec.rd import available_models, rate_distortion
from vqkit.codec.search import SearchConfig
from vqkit.data import DataError
from vqkit.runs import layout
from vqkit.runs.results import write_result, write_result_file

MEASURABLE = tuple(m for m in ENTROPY_CHOICES if m != "auto")  # what --entropy-models may name


def _numbers(text: str, flag: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise DataError(f"{flag} takes comma-separated numbers, got {text!r}") from e
    if not values:
        raise DataError(f"{flag} is empty")
    return values


def main(argv: list[str]) -> int:
    p = parser("rd", "Rate-distortion of a run's codec on a data set: bpp (nominal, estimated, actual), "
                     "PSNR, SSIM and speed per entropy model and coding scale.")  # fmt: skip
    add_run(p)
    p.add_argument("--data", required=True, help="images to compress: files, folders or a data spec")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--max-images", type=int, help="use at most the first N images")
    p.add_argument(
        "--entropy-models",
        help=f"comma-separated entropy models to measure, from {', '.join(MEASURABLE)} "
        "(default: every one the run has: raw, static when fitted, prior when trained)",
    )
    p.add_argument(
        "--scales",
        default="1",
        help="comma-separated coding scales, as vqkit compress --scale: above 1 more codes (default 1)",
    )
    p.add_argument(
        "--search",
        type=int,
        default=0,
        metavar="PASSES",
        help="choose codes by decoded error + rate in this many sweeps, as vqkit compress --search "
        "(default 0: nearest codes)",
    )
    p.add_argument(
        "--search-lambda",
        type=float,
        default=SearchConfig.lmbda,
        help=f"with --search: squared error (8-bit units) one bit is worth (default {SearchConfig.lmbda:g})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (search and prior)")
    add_threads(p)
    add_device(p)
    a = p.parse_args(argv)
    apply_threads(p, a.threads)
    if a.max_images is not None and a.max_images < 1:
        p.error("--max-images must be >= 1")
    scales = _numbers(a.scales, "--scales")
    if any(not SCALE_RANGE[0] <= s <= SCALE_RANGE[1] for s in scales):
        p.error(f"--scales must lie in [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]")
    search = None
    if a.search:
        try:
            search = SearchConfig(passes=a.search, lmbda=a.search_lambda)
        except ValueError as e:
            p.error(str(e))
    coding = Coding(load_run(a.run, a.device, a.precision))
    if a.entropy_models:
        models = [m.strip() for m in a.entropy_models.split(",") if m.strip()]
        if bad := [m for m in models if m not in MEASURABLE]:
            p.error(f"unknown entropy model {bad[0]!r}; choose from {', '.join(MEASURABLE)}")
    else:
        models = available_models(coding)
    images, names, problems = read_inputs([a.data], a.max_images)
    report_skipped(problems)
    points = rate_distortion(
        coding, images, models, scales, search=search, names=names, progress=not a.no_progress
    )
    data = {
        "run": str(a.run),
        "data": a.data,
        "num_images": len(images),
        "entropy_models": models,
        "scales": scales,
        "search": None if search is None else asdict(search),
        "device": str(coding.run.device),
        "timing": "seconds: compress_images wall time per point, including the decode that measures quality",
        "points": points,
    }
    path = write_result(coding.run.path, layout.RD_FILE, "rd", data)
    if a.json:
        write_result_file(a.json, "rd", data)
    print(
        f"{'model':<12}{'scale':>6}{'nominal':>9}{'estim.':>9}{'actual':>9}{'PSNR':>8}{'SSIM':>8}{'img/s':>9}"
    )
    for pt in points:
        print(
            f"{pt['entropy_model']:<12}{pt['scale']:>6g}{pt['bpp_nominal']:>9.4f}{pt['bpp_estimated']:>9.4f}"
            f"{pt['bpp_actual']:>9.4f}{pt['psnr']:>8.2f}{pt['ssim']:>8.4f}{pt['images_per_s']:>9.3g}"
        )
    print(f"bits per pixel of {len(images)} images of {a.data}; wrote {path}")
    return 0
