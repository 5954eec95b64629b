"""vqkit reconstruct: a picture of images (top) above their reconstructions (bottom)."""

from __future__ import annotations

from vqkit.cli.common import add_device, add_output, add_run, load_run, parser
from vqkit.data import load_dataset
from vqkit.visual import image_grid, save_png


def main(argv: list[str]) -> int:
    p = parser("reconstruct", "Save originals beside their reconstructions as one PNG.")
    add_run(p)
    p.add_argument("images", nargs="+", help="image files, folders or data specs")
    add_output(p, "output PNG")
    p.add_argument("--max-images", type=int, default=16, help="cap on images shown (default 16)")
    p.add_argument(
        "--zoom", type=int, default=0, help="enlarge the picture by this whole factor (0: automatic)"
    )
    add_device(p)
    a = p.parse_args(argv)
    if a.zoom < 0:
        p.error("--zoom must be >= 0")
    run = load_run(a.run, a.device, a.precision)
    originals = []
    for spec in a.images:
        originals += load_dataset(spec, channels=run.channels).images
    originals = originals[: a.max_images]
    recons = [run.reconstruct([im])[0] for im in originals]  # one at a time: sizes may differ
    grid = image_grid([originals, recons])
    zoom = a.zoom or max(1, 128 // max(im.shape[0] for im in originals))
    save_png(grid, a.output, scale=zoom)
    print(f"wrote {a.output} ({len(originals)} images, top: originals, bottom: reconstructions)")
    return 0
