"""vqkit sample | complete: new images from a run's prior, or the rest of an image from its top rows."""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from vqkit.cli.common import add_device, add_output, add_run, load_run, parser
from vqkit.data import DataError, load_dataset
from vqkit.priors import Prior, load_prior, read_prior_doc
from vqkit.runs import Run, layout, shipped
from vqkit.visual import image_grid, save_png


def class_names_of(run: Run) -> list[str]:
    names = read_prior_doc(run.path).get("class_names") or run.meta.get("class_names") or []
    return [str(n) for n in names]


def parse_label(text: str | None, prior: Prior, names: list[str]) -> int | None:
    """--label as a class name or an integer; None for no label."""
    if text is None:
        return None
    k = prior.config.num_classes
    if k == 0:
        raise DataError("this prior is unconditional (trained without labels); drop --label")
    if text in names:
        return names.index(text)
    try:
        label = int(text)
    except ValueError:
        raise DataError(f"unknown label {text!r}; classes: {', '.join(names) or f'0..{k - 1}'}") from None
    if not 0 <= label < k:
        raise DataError(f"label {label} out of range: the prior knows classes 0..{k - 1}")
    return label


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely codes only")
    p.add_argument("--label", help="class name or number (class-conditional priors)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling (default 0)")
    add_device(p)


def _load(a: argparse.Namespace) -> tuple[Run, Prior, torch.Tensor | None, torch.Generator]:
    if a.temperature <= 0:
        raise DataError(f"--temperature must be > 0, got {a.temperature}")
    if a.top_k is not None and a.top_k < 1:
        raise DataError(f"--top-k must be >= 1, got {a.top_k}")
    if a.n < 1:
        raise DataError(f"-n must be >= 1, got {a.n}")
    run = load_run(a.run, a.device, a.precision)
    prior = load_prior(a.run, a.device)
    label = parse_label(a.label, prior, class_names_of(run))
    labels = None if label is None else torch.full((a.n,), label, dtype=torch.long, device=run.device)
    return run, prior, labels, torch.Generator(run.device).manual_seed(a.seed)


def _scale(height: int) -> int:
    return max(1, 128 // max(height, 1))


def sample_main(argv: list[str]) -> int:
    p = parser("sample", "Sample new images from a run's prior: a grid PNG plus one PNG per image.")
    add_run(p, "run folder with a trained prior")
    p.add_argument("-n", type=int, default=16, help="number of images (default 16)")
    add_output(
        p,
        f"grid PNG; the images go to <stem>_samples/ beside it (default: RUN/{layout.SAMPLES_FILE}, "
        "which the report shows; MODEL-samples.png here for a shipped model)",
        required=False,
    )
    _add_sampling(p)
    a = p.parse_args(argv)
    a.output = a.output or shipped.output_path(a.run, layout.SAMPLES_FILE)
    run, prior, labels, generator = _load(a)
    t0 = time.perf_counter()
    indices = prior.sample(a.n, temperature=a.temperature, top_k=a.top_k, labels=labels, generator=generator)
    t_prior = time.perf_counter() - t0
    images = run.decode(indices.cpu().numpy())
    t_total = time.perf_counter() - t0
    columns = math.ceil(math.sqrt(a.n))
    rows = [list(images[i : i + columns]) for i in range(0, a.n, columns)]
    save_png(image_grid(rows), a.output, scale=_scale(images.shape[1]))
    folder = a.output.with_name(a.output.stem + "_samples")
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        save_png(image, folder / f"{i:04d}.png")
    print(f"wrote {a.output} and {a.n} images in {folder}")
    print(f"{a.n / t_total:.1f} images/s ({a.n / t_prior:.1f}/s from the prior, {t_total:.2f} s in all)")
    return 0


def complete_main(argv: list[str]) -> int:
    p = parser("complete", "Keep the top rows of an image's codes and sample the rest from the prior.")
    add_run(p, "run folder with a trained prior")
    p.add_argument("image", help="an image whose code grid matches the prior's grid")
    p.add_argument("--keep-top", type=int, required=True, metavar="ROWS", help="code rows kept")
    add_output(
        p,
        f"PNG: original | reconstruction | completions (default: RUN/{layout.COMPLETION_FILE}, which "
        "the report shows; MODEL-completion.png here for a shipped model)",
        required=False,
    )
    p.add_argument("-n", type=int, default=4, help="completions (default 4)")
    _add_sampling(p)
    a = p.parse_args(argv)
    a.output = a.output or shipped.output_path(a.run, layout.COMPLETION_FILE)
    run, prior, labels, generator = _load(a)
    data = load_dataset(a.image, channels=run.channels)
    if len(data) != 1:
        raise DataError(f"{a.image} holds {len(data)} images; complete takes one image")
    image = data.images[0]
    grid = run.encode([image])[0]
    h, w = prior.config.grid
    if grid.shape != (h, w):
        f = run.model.downsample
        raise DataError(
            f"{a.image} is {image.shape[0]}x{image.shape[1]} pixels, a {grid.shape[0]}x{grid.shape[1]} "
            f"code grid; the prior models {h}x{w} grids ({h * f}x{w * f}-pixel images). Crop or resize it."
        )
    if not 0 <= a.keep_top <= h:
        raise DataError(f"--keep-top must be between 0 and {h} (the grid's rows), got {a.keep_top}")
    prefix = torch.from_numpy(np.repeat(grid[None], a.n, axis=0)).to(run.device)
    t0 = time.perf_counter()
    indices = prior.sample(a.n, temperature=a.temperature, top_k=a.top_k, labels=labels,
                           generator=generator, prefix=prefix, keep=a.keep_top * w)  # fmt: skip
    elapsed = time.perf_counter() - t0
    size = (int(image.shape[0]), int(image.shape[1]))
    recon = run.decode(grid[None], size)[0]
    completions = list(run.decode(indices.cpu().numpy(), size))
    save_png(image_grid([[image, recon, *completions]]), a.output, scale=_scale(size[0]))
    print(f"wrote {a.output}: original | reconstruction | {a.n} completions of the bottom "
          f"{h - a.keep_top} code rows ({a.n / elapsed:.1f} completions/s)")  # fmt: skip
    return 0
