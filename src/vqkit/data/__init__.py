"""Data loading (format detection, the built-in default set) and batch transforms."""

from vqkit.data.batching import iter_batches
from vqkit.data.builtin import load_builtin
from vqkit.data.datasets import (
    IMAGE_EXTENSIONS,
    load_dataset,
    read_image,
    split_holdout,
)
from vqkit.data.errors import DataError
from vqkit.data.imageset import ImageSet
from vqkit.data.transforms import random_crop_flip, to_float, to_uint8_hwc

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "ImageSet",
    "iter_batches",
    "load_builtin",
    "load_dataset",
    "random_crop_flip",
    "read_image",
    "split_holdout",
    "to_float",
    "to_uint8_hwc",
]
