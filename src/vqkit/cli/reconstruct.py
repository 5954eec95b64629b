"""vqkit reconstruct: a picture of images (top) above their reconstructions (bottom)."""

from __future__ import annotations

from pathlib import Path

from vqkit.cli.common import add_device, parser
from vqkit.data import load_dataset
from vqkit.runs import Run
from vqkit.visual import image_grid, save_png


def main(argv: list[str]) -> int:
    p = parser("reconstruct", "Save originals beside their reconstructions as one PNG.")
    p.add_argument("run", type=Path)
    p.add_argument("images", nargs="+", help="image files, folders or data specs")
    p.add_argument("-o", "--output", type=Path, required=True, help="output PNG")
    p.add_argument("--max-images", type=int, default=16, help="cap on images shown (default 16)")
    p.add_argument("--scale", type=int, default=0, help="enlarge by this factor (0: automatic)")
    add_device(p)
    a = p.parse_args(argv)
    run = Run.load(a.run, a.device, a.precision)
    originals = []
    for spec in a.images:
        originals += load_dataset(spec, channels=run.channels).images
    originals = originals[: a.max_images]
    recons = [run.reconstruct([im])[0] for im in originals]  # one at a time: sizes may differ
    grid = image_grid([originals, recons])
    scale = a.scale or max(1, 128 // max(im.shape[0] for im in originals))
    save_png(grid, a.output, scale=scale)
    print(f"wrote {a.output} ({len(originals)} images, top: originals, bottom: reconstructions)")
    return 0
