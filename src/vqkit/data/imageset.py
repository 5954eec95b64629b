"""ImageSet: decoded images in memory, the one type every data source yields."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from vqkit.data.errors import DataError


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no useful ==, so identity semantics
class ImageSet:
    """Decoded images in memory, each (H, W, C) uint8 with C == `channels`; sizes may differ."""

    images: list[np.ndarray]
    labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    channels: int
    source: str
    names: tuple[str, ...]
    skipped: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise DataError(f"ImageSet channels must be 1 or 3, got {self.channels}")
        if len(self.names) != len(self.images):
            raise DataError(f"{len(self.names)} names for {len(self.images)} images")
        for name, img in zip(self.names, self.images, strict=True):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != self.channels:
                raise DataError(
                    f"image {name!r} is {img.dtype} {img.shape}; expected uint8 (H, W, {self.channels})"
                )
        if self.labels is not None and (
            self.labels.dtype != np.int64 or self.labels.shape != (len(self.images),)
        ):
            raise DataError(
                f"labels must be int64 of shape ({len(self.images)},), got "
                f"{self.labels.dtype} {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def uniform_size(self) -> tuple[int, int] | None:
        """(H, W) when every image has that size; None for mixed sizes or an empty set."""
        sizes = {img.shape[:2] for img in self.images}
        if len(sizes) != 1:
            return None
        h, w = sizes.pop()
        return int(h), int(w)

    def as_array(self) -> np.ndarray:
        """(N, H, W, C) uint8 copy; an empty set gives (0, 0, 0, C)."""
        if not self.images:
            return np.empty((0, 0, 0, self.channels), np.uint8)
        if self.uniform_size is None:
            sizes = sorted({img.shape[:2] for img in self.images})
            raise DataError(
                f"{self.source}: images differ in size ({len(sizes)} sizes, e.g. "
                f"{sizes[:3]}); use .patches(size) to cut equal crops"
            )
        return np.stack(self.images)

    def subset(self, idx: np.ndarray | list[int]) -> ImageSet:
        """A new ImageSet with the images at integer positions `idx`, in that order."""
        index = np.asarray(idx, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise DataError(f"subset index out of range for {len(self)} images")
        return ImageSet(
            images=[self.images[i] for i in index],
            labels=None if self.labels is None else self.labels[index],
            class_names=self.class_names,
            channels=self.channels,
            source=self.source,
            names=tuple(self.names[i] for i in index),
            skipped=self.skipped,
        )

    def patches(self, size: int, per_image: int | None = None, seed: int = 0) -> np.ndarray:
        """(M, size, size, C) uint8 crops, deterministic for a given `seed`.

        An image of exactly size x size is taken once as-is; one smaller in either side is skipped,
        and a warning names the skipped images.
        `per_image=None` tiles each image with non-overlapping crops on a grid centred in the image
        (leftover margins split evenly); an integer draws that many uniform random positions.
        """
        if size < 1 or (per_image is not None and per_image < 1):
            raise DataError(f"patches needs size >= 1 and per_image >= 1 (got {size}, {per_image})")
        rng = np.random.default_rng(seed)
        crops: list[np.ndarray] = []
        too_small: list[str] = []
        for img, name in zip(self.images, self.names, strict=True):
            h, w = img.shape[:2]
            if h < size or w < size:
                too_small.append(name)
                continue
            if h == size and w == size:
                crops.append(img)
                continue
            if per_image is None:
                rows, cols = h // size, w // size
                y0, x0 = (h - rows * size) // 2, (w - cols * size) // 2
                ys = np.repeat(y0 + size * np.arange(rows), cols)
                xs = np.tile(x0 + size * np.arange(cols), rows)
            else:
                ys = rng.integers(0, h - size + 1, per_image)
                xs = rng.integers(0, w - size + 1, per_image)
            crops.extend(img[y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True))
        if not crops:
            raise DataError(f"{self.source}: no image is at least {size}x{size}")
        if too_small:
            listed = ", ".join(too_small[:5]) + (" ..." if len(too_small) > 5 else "")
            warnings.warn(
                f"{len(too_small)} of {len(self.images)} images in {self.source} are smaller than the "
                f"{size}x{size} crop and were left out: {listed}",
                stacklevel=2,
            )
        return np.stack(crops)
