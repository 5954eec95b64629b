"""vqkit encode / decode: data set <-> index grids in an .npz file.

codes.npz holds ``indices`` (N, h, w) int16/int32 when all images share one size (else ``indices_<i>``
per image), ``sizes`` (N, 2) original H, W, ``names`` and, when the data has them, ``labels``; plus
``codebook_size``, ``stages`` and the run's ``model_fingerprint`` so decode refuses codes from another
model. A residual VQ run of S stages writes (N, S, h, w) ((S, h, w) per image); decode takes any
prefix of the stages, (N, s, h, w) with 1 <= s <= S.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vqkit.cli.common import add_device, add_output, add_run, load_run, parser
from vqkit.data import DataError, load_dataset
from vqkit.runs import model_fingerprint
from vqkit.visual import save_png


def output_name(index: int, name: str) -> str:
    """A file name for image ``index``: its position (unique) and a readable, safe form of its name."""
    stem = re.sub(r"\.(png|jpe?g|webp|bmp|gif|tiff?|ppm|pgm)$", "", name, flags=re.IGNORECASE)
    return f"{index:05d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', stem).strip('_')}.png"


def encode_main(argv: list[str]) -> int:
    p = parser("encode", "Encode images to index grids (.npz).")
    add_run(p)
    p.add_argument("--data", required=True, help="data spec: the images to encode")
    add_output(p, "output .npz of index grids")
    p.add_argument("--max-images", type=int, help="encode the first this many images")
    add_device(p)
    a = p.parse_args(argv)
    run = load_run(a.run, a.device, a.precision)
    data = load_dataset(a.data, channels=run.channels, max_images=a.max_images)
    grids = run.encode(data.images)
    dtype = np.int16 if run.model.codebook_size <= 2**15 else np.int32
    arrays: dict[str, np.ndarray] = {
        "sizes": np.array([im.shape[:2] for im in data.images], dtype=np.int64),
        "names": np.array(data.names),
        "codebook_size": np.array(run.model.codebook_size),
        "stages": np.array(run.stages),
        "model_fingerprint": np.array(model_fingerprint(run.path)),
    }
    if len({g.shape for g in grids}) == 1:
        arrays["indices"] = np.stack(grids).astype(dtype)
    else:
        arrays.update({f"indices_{i}": g.astype(dtype) for i, g in enumerate(grids)})
    if data.labels is not None:
        arrays["labels"] = data.labels
    a.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.output, **arrays)  # type: ignore[arg-type]
    print(f"encoded {len(grids)} images to {a.output} (grid {grids[0].shape[0]}x{grids[0].shape[1]})")
    return 0


def decode_main(argv: list[str]) -> int:
    p = parser("decode", "Decode index grids (.npz from vqkit encode) to PNG images.")
    add_run(p, "run folder: the trained model that encoded CODES")
    p.add_argument("codes", type=Path, help="an .npz of index grids written by vqkit encode")
    add_output(p, "output folder of PNG images")
    p.add_argument("--force", action="store_true", help="decode even if the model fingerprint differs")
    add_device(p)
    a = p.parse_args(argv)
    run = load_run(a.run, a.device, a.precision)
    try:
        z = np.load(a.codes, allow_pickle=False)
        sizes, names = z["sizes"], [str(n) for n in z["names"]]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{a.codes} is not a codes file from vqkit encode: {e}") from e
    if str(z["model_fingerprint"]) != model_fingerprint(run.path) and not a.force:
        raise DataError(f"{a.codes} was encoded by another model than {a.run} (use --force to decode)")
    grids = (
        [z["indices"][i] for i in range(len(sizes))]
        if "indices" in z
        else [z[f"indices_{i}"] for i in range(len(sizes))]
    )
    a.output.mkdir(parents=True, exist_ok=True)
    for i, (grid, size, name) in enumerate(zip(grids, sizes, names, strict=True)):
        try:
            image = run.decode(grid[None].astype(np.int64), (int(size[0]), int(size[1])))[0]
        except ValueError as e:  # grids of another shape or stage count, codes out of range
            raise DataError(f"{a.codes}: image {i}: {e}") from e
        save_png(image, a.output / output_name(i, name))
    print(f"decoded {len(grids)} images into {a.output}")
    return 0
