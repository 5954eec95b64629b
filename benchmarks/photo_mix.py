"""Write a training set that mixes a 32x32 dataset with crops cut from photographs at their own scale.

CIFAR-10 thumbnails show whole objects in 32x32 pixels, so every block holds edges and texture; a
768x512 photograph such as Kodak's is far smoother at the pixel level. A model meant for photos should
also see 32x32 windows cut from photos at native scale (and at half scale, box-filtered), which this
script adds. The photos are the user's; benchmarks use the colour photos bundled with scikit-image
(never Kodak, which is the test set).

    python benchmarks/photo_mix.py --data CIFAR_TRAIN --photos PHOTO_DIR --crops 12000 --out mix.npz

Writes an uncompressed .npz with `images` (N, 32, 32, 3) uint8 and no labels (the prior is then
unconditional, as it is when coding a photo), base images first, then crops in a fixed-seed order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vqkit.data import load_dataset

SIZE = 32


def crops(photos: list[np.ndarray], count: int, windows: tuple[int, ...], seed: int) -> np.ndarray:
    """(count, 32, 32, 3) uint8 crops: photo and window drawn uniformly, position uniform inside."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, SIZE, SIZE, 3), np.uint8)
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        window = windows[rng.integers(len(windows))]
        h, w = photo.shape[:2]
        y, x = rng.integers(h - window + 1), rng.integers(w - window + 1)
        patch = photo[y : y + window, x : x + window]
        if window != SIZE:  # area averaging, as the builtin set does
            patch = np.asarray(Image.fromarray(patch).resize((SIZE, SIZE), Image.Resampling.BOX))
        out[i] = patch
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="base data spec (32x32 RGB images)")
    p.add_argument("--photos", type=Path, required=True, help="folder of photographs (PNG/JPEG/WebP)")
    p.add_argument("--crops", type=int, default=12000, help="number of photo crops to add")
    p.add_argument("--windows", type=int, nargs="+", default=[32, 32, 64], help="crop windows (pixels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    base = load_dataset(a.data, channels=3)
    if base.images[0].shape[:2] != (SIZE, SIZE):
        p.error(f"base images must be {SIZE}x{SIZE}, got {base.images[0].shape}")
    files = sorted(f for f in a.photos.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not files:
        p.error(f"no photos in {a.photos}")
    photos = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    if any(min(ph.shape[:2]) < max(a.windows) for ph in photos):
        p.error("every photo must be at least as large as the largest window")
    extra = crops(photos, a.crops, tuple(a.windows), a.seed)
    images = np.concatenate([np.stack(base.images), extra])
    np.savez(a.out, images=images)
    print(f"{a.out}: {len(base.images)} base images + {len(extra)} crops of {len(photos)} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
