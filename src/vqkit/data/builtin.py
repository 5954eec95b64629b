"""The embedded default dataset: 32x32 RGB crops of the colour photos bundled with scikit-image.

It lets every command run with no data on disk and no network (`vqkit train data=builtin`). The
photos ship inside the scikit-image wheel, so nothing is downloaded. Crops are cut at three window
sizes (32, 64, 128 pixels) at fixed-seed random positions; larger windows are reduced to 32x32 by
area averaging (PIL's box filter), so each crop looks like a small natural image at some scale, much
as CIFAR images do.

Labels: the index of the source photo, with the photo names as `class_names`; useful for probes and
per-photo statistics, not a semantic classification. Crop names read ``photo/w<window>/y<y>x<x>``.

Two JPEG photos (rocket, hubble_deep_field) go through the installed JPEG decoder, so the pixels are
identical run to run on one install but may differ by a grey level across decoder builds.
Excluded on purpose: `retina` (mostly a black field), `colorwheel`/`logo` (synthetic), and the
photos scikit-image fetches over the network (`skin`, `lily`, `kidney`, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image

from vqkit.data.errors import DataError
from vqkit.data.imageset import ImageSet

CROP_SIZE = 32
WINDOWS = (32, 64, 128)  # crop windows in source pixels; each is box-filtered down to CROP_SIZE
CROPS_PER_WINDOW = 240  # per photo and window: 7 photos x 3 windows x 240 = 5040 crops
SEED = 20240611


def _photo_loaders() -> list[tuple[str, Callable[[], np.ndarray]]]:
    import skimage.data as sd  # imported here: skimage is slow to import and only needed once

    return [
        ("astronaut", sd.astronaut),
        ("coffee", sd.coffee),
        ("chelsea", sd.chelsea),
        ("rocket", sd.rocket),
        ("immunohistochemistry", sd.immunohistochemistry),
        ("hubble_deep_field", sd.hubble_deep_field),
        ("motorcycle", lambda: sd.stereo_motorcycle()[0]),  # left view of the stereo pair
    ]


@lru_cache(maxsize=1)
def _crops() -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """(N, 32, 32, 3) uint8 read-only crops, (N,) int64 photo labels, photo names, crop names."""
    rng = np.random.default_rng(SEED)
    crops: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    photo_names: list[str] = []
    for label, (photo_name, load) in enumerate(_photo_loaders()):
        try:
            photo = np.asarray(load())
        except Exception as err:  # e.g. a scikit-image build without its bundled data
            raise DataError(f"builtin dataset: cannot load scikit-image photo {photo_name!r}: {err}") from err
        if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
            raise DataError(f"builtin dataset: photo {photo_name!r} is not uint8 RGB")
        photo_names.append(photo_name)
        h, w = photo.shape[:2]
        for window in WINDOWS:
            ys = rng.integers(0, h - window + 1, CROPS_PER_WINDOW)
            xs = rng.integers(0, w - window + 1, CROPS_PER_WINDOW)
            for y, x in zip(ys, xs, strict=True):
                crop = photo[y : y + window, x : x + window]
                if window != CROP_SIZE:
                    # BOX resampling with an integer factor is exact area averaging.
                    small = Image.fromarray(crop).resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BOX)
                    crop = np.asarray(small)
                crops.append(crop)
                labels.append(label)
                names.append(f"{photo_name}/w{window}/y{y}x{x}")
    pixels = np.stack(crops)  # (N, 32, 32, 3)
    pixels.setflags(write=False)  # shared by every caller through the cache
    label_arr = np.asarray(labels, dtype=np.int64)
    label_arr.setflags(write=False)
    return pixels, label_arr, tuple(photo_names), tuple(names)


def load_builtin() -> ImageSet:
    """The default dataset as an ImageSet of read-only (32, 32, 3) uint8 images (cached)."""
    pixels, labels, photo_names, names = _crops()
    return ImageSet(
        images=list(pixels),  # fresh list of read-only views: callers cannot alter the cache
        labels=labels,
        class_names=photo_names,
        channels=3,
        source=(
            f"builtin: {len(names)} {CROP_SIZE}x{CROP_SIZE} crops of scikit-image's bundled "
            f"photos ({', '.join(photo_names)})"
        ),
        names=names,
    )
