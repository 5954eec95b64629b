"""Compression to .vqk files: a versioned container of entropy-coded code grids (docs/format.md).

from vqkit.codec import compress_images, decompress, fit_static_model
result = compress_images("runs/cifar", images, entropy_model="auto")   # CompressResult
images = decompress("runs/cifar", result.files[0])
per_file = decompress_many("runs/cifar", result.files)  # many files decode together, faster
sharper = compress_images("runs/cifar", images, search=SearchConfig(passes=2))  # slower encoder
higher = compress_images("runs/cifar", images, scale=1.25)  # coded at 1.25x the size: a higher rate
"""

from vqkit.codec.api import (
    CompressResult,
    ImageReport,
    coded_size,
    compress_images,
    decode_codes,
    decode_codes_many,
    decode_grids,
    decompress,
    decompress_many,
    default_search,
    images_from_codes,
    resample,
)
from vqkit.codec.coding import ENTROPY_CHOICES, Coding
from vqkit.codec.container import FORMAT_VERSION, CodecError, Container, EntropyModel, Mode, parse
from vqkit.codec.entropy import PRIOR_BATCH
from vqkit.codec.fitting import STATIC_TABLE_FILE, carry_entropy_models, fit_static_model, load_static_table
from vqkit.codec.search import SearchConfig
from vqkit.codec.targets import StageChoice, choose_stages

__all__ = [
    "ENTROPY_CHOICES",
    "FORMAT_VERSION",
    "PRIOR_BATCH",
    "STATIC_TABLE_FILE",
    "CodecError",
    "Coding",
    "CompressResult",
    "Container",
    "EntropyModel",
    "ImageReport",
    "Mode",
    "SearchConfig",
    "StageChoice",
    "carry_entropy_models",
    "choose_stages",
    "coded_size",
    "compress_images",
    "decode_codes",
    "decode_codes_many",
    "decode_grids",
    "decompress",
    "decompress_many",
    "default_search",
    "fit_static_model",
    "images_from_codes",
    "load_static_table",
    "parse",
    "resample",
]
