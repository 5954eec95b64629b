"""Pictures: image grids for reconstructions and samples (PNG through Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqkit.data import to_float, to_uint8_hwc


def image_grid(rows: list[list[np.ndarray]], pad: int = 2, background: int = 255) -> np.ndarray:
    """Tile rows of (H, W, C) uint8 images (any sizes) into one (GH, GW, 3) uint8 picture."""
    cell_h = max(im.shape[0] for row in rows for im in row)
    cell_w = max(im.shape[1] for row in rows for im in row)
    n_cols = max(len(row) for row in rows)
    grid = np.full((pad + len(rows) * (cell_h + pad), pad + n_cols * (cell_w + pad), 3), background, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            rgb = np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im[..., :3]
            y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
            grid[y : y + im.shape[0], x : x + im.shape[1]] = rgb
    return grid


def save_png(array: np.ndarray, path: str | Path, scale: int = 1) -> None:
    """Write an (H, W, 3|1) uint8 array as PNG, optionally enlarged by nearest-neighbour ``scale``."""
    img = Image.fromarray(array.squeeze(2) if array.shape[2] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")  # PNG whatever the name ends in (Pillow would refuse "-o grid")


def _auto_scale(height: int) -> int:
    """Enlarge tiny images (CIFAR's 32 px) so a person can see them; leave photos alone."""
    return max(1, 128 // max(height, 1))


@torch.no_grad()
def save_reconstruction_grid(
    model: torch.nn.Module,
    images: list[np.ndarray],
    path: str | Path,
    device: torch.device | str = "cpu",
) -> None:
    """Originals (top row) above their reconstructions (bottom row)."""
    was_training = model.training
    model.eval()
    try:
        recons = []
        for im in images:
            x = to_float(torch.from_numpy(np.array(im[None]))).to(device)
            recons.append(to_uint8_hwc(model.reconstruct(x).cpu())[0])  # type: ignore[operator]
    finally:
        model.train(was_training)
    grid = image_grid([list(images), recons])
    save_png(grid, path, scale=_auto_scale(max(im.shape[0] for im in images)))
