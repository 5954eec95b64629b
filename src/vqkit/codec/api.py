"""Public compress / decompress API: images <-> .vqk bytes, with the rate and quality report.

Images are (H, W, C) uint8 arrays with C = 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA), as ``read_image`` gives
them. The colour channels go through the VQ-VAE (grey images are replicated to RGB for an RGB model and
turned back to grey with BT.601 luma after decoding); alpha is stored losslessly beside the codes as a
zlib-compressed plane. An RGB image given to a 1-channel model is refused.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from vqkit.codec.coder import StreamEncoder, range_decode, range_encode, raw_bits, raw_decode, raw_encode
from vqkit.codec.coding import CHOICE_MODELS, PRIOR_MODELS, Coding, model_name
from vqkit.codec.container import (
    CodecError,
    Container,
    EntropyModel,
    Mode,
    Record,
    build,
    check_size,
    parse,
    write_varint,
)
from vqkit.codec.fitting import load_run_prior
from vqkit.codec.search import DEFAULT_GROUPED, SearchConfig, search_grids
from vqkit.codec.staged import check_stage_counts, decode_stage_grid, encode_stage_grids, stage_counts
from vqkit.codec.tables import code_bits
from vqkit.data import to_float
from vqkit.metrics import psnr_per_image, ssim_per_image
from vqkit.priors.grouped import GroupedPrior
from vqkit.runs import Run

PSNR_CAP = 100.0
BATCH_PIXELS = 1 << 22
SCALE_RANGE = (0.25, 4.0)  # coding scales accepted by compress_images


@dataclass
class ImageReport:
    index: int
    name: str
    height: int
    width: int
    mode: str
    grid: tuple[int, int]
    bpp_nominal: float  # log2(K) bits per code
    bpp_estimated: float  # -log2 p of the codes under the coding tables (+ alpha bytes)
    bpp_actual: float  # bytes on disk: the whole file, or the image's index entry + payload in an archive
    codes_bits_estimated: float
    codes_bytes: int
    alpha_bytes: int
    psnr: float
    ssim: float
    stages: int = 1  # n, the stages of a residual VQ run's codes coded (bpp_nominal counts n log2 K)


@dataclass
class CompressResult:
    files: list[bytes]  # one per image, or one archive
    entropy_model: str
    header_bytes: int  # container headers and index entries over all files
    reports: list[ImageReport]
    grids: list[np.ndarray]  # (h, w) int64 code grid of each image, as written; (n, h, w) for rvq runs

    def summary(self) -> dict[str, Any]:
        pixels = sum(r.height * r.width for r in self.reports)
        est_bits = sum(r.codes_bits_estimated for r in self.reports)
        codes_bytes = sum(r.codes_bytes for r in self.reports)
        alpha_bytes = sum(r.alpha_bytes for r in self.reports)
        total = sum(len(f) for f in self.files)
        return {
            "images": len(self.reports),
            "files": len(self.files),
            "entropy_model": self.entropy_model,
            "pixels": pixels,
            "bpp_nominal": sum(r.bpp_nominal * r.height * r.width for r in self.reports) / pixels,
            "bpp_estimated": (est_bits + 8 * alpha_bytes) / pixels,
            "bpp_actual": 8 * total / pixels,
            "bytes_total": total,
            "bytes_header": self.header_bytes,
            "bytes_codes": codes_bytes,
            "bytes_alpha": alpha_bytes,
            "codes_bits_estimated": est_bits,
            "codes_overhead": 8 * codes_bytes / est_bits - 1 if est_bits else 0.0,
            "psnr": float(np.mean([r.psnr for r in self.reports])),
            "ssim": float(np.mean([r.ssim for r in self.reports])),
        }

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary(), "images": [asdict(r) for r in self.reports]}


def _to_grey(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (..., 1) uint8 by BT.601 luma, rounded half up in integers."""
    c = rgb.astype(np.uint32)
    luma = (299 * c[..., 0] + 587 * c[..., 1] + 114 * c[..., 2] + 500) // 1000
    return luma.astype(np.uint8)[..., None]


def _split(image: np.ndarray, channels: int, index: int) -> tuple[Mode, np.ndarray, np.ndarray | None]:
    """An input image -> (mode, model input with the run's channels, alpha plane or None)."""
    im = image[:, :, None] if image.ndim == 2 else image
    if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] not in (1, 2, 3, 4):
        raise CodecError(f"image {index} is {im.dtype} {im.shape}; expected uint8 (H, W, 1 to 4 channels)")
    check_size(im.shape[0], im.shape[1], f"image {index}")
    mode = Mode.from_channels(im.shape[2])
    color = im[:, :, : mode.color_channels]
    if mode.color_channels == 1 and channels == 3:
        color = np.repeat(color, 3, axis=2)
    elif mode.color_channels != channels:
        raise CodecError(
            f"image {index} is {mode.name} but the run's model encodes grey images; convert it to grey first"
        )
    alpha = np.ascontiguousarray(im[:, :, -1]) if mode.has_alpha else None
    return mode, np.ascontiguousarray(color), alpha


def coded_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The (height, width) an image is coded at for ``scale`` (rounded, at least one pixel)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resample(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 -> (size[0], size[1], C) uint8 by Pillow's Lanczos filter, channel by channel
    (Pillow works in integers: the same pixels on every machine). Unchanged when the size is equal."""
    if image.shape[:2] == size:
        return image
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[:, :, c])).resize(size[::-1], Image.Resampling.LANCZOS)
        )
        for c in range(image.shape[2])
    ]
    return np.stack(planes, axis=2)


def _finish(recon: np.ndarray, mode: Mode) -> np.ndarray:
    """A decoded (H, W, run channels) image -> the colour channels of ``mode``."""
    if mode.color_channels == 1 and recon.shape[2] == 3:
        return _to_grey(recon)
    return recon


def _restore(recon: np.ndarray, rec: Record) -> np.ndarray:
    """A decoded image at the record's coded size -> the original size."""
    return resample(recon, (rec.height, rec.width))


def _groups(sizes: Sequence[tuple[int, ...]]) -> list[tuple[int, int]]:
    """(start, end) of consecutive images of one size, each batch at most ~4M pixels (big photos
    go a few at a time, CIFAR-sized images 256 at a time)."""
    out: list[tuple[int, int]] = []
    start = 0
    while start < len(sizes):
        h, w = sizes[start][:2]
        limit = max(1, min(256, BATCH_PIXELS // (h * w)))
        end = start + 1
        while end < len(sizes) and end - start < limit and sizes[end] == sizes[start]:
            end += 1
        out.append((start, end))
        start = end
    return out


def _encode(
    coding: Coding,
    inputs: Sequence[np.ndarray],
    search: SearchConfig | None,
    progress: bool,
    entropy_model: str = "auto",
) -> list[np.ndarray]:
    grids: list[np.ndarray] = []
    if search is None:
        for start, end in _groups([im.shape for im in inputs]):
            grids.extend(coding.run.encode(list(inputs[start:end]), batch_size=end - start))
        return grids
    bits = coding.static_bits()
    # the prior as the rate when it will code the file ("auto" prefers it, and it takes any grid), cut
    # into windows as its coder will cut the grid
    model = CHOICE_MODELS.get(entropy_model, EntropyModel.PRIOR_OVERLAP)
    uses_prior = search.rate == "auto" and model in PRIOR_MODELS and coding.prior(model) is not None
    prior = coding.search_prior() if uses_prior else _grouped_search_prior(coding, search, entropy_model)
    context = coding.require_prior(model).context if uses_prior else (0, 0)
    total = search.passes * sum(math.prod(coding.grid_shape(*im.shape[:2])) for im in inputs)
    with tqdm(total=total, desc="search", unit="code", unit_scale=True, disable=not progress) as bar:
        for start, end in _groups([im.shape for im in inputs]):
            images = np.stack(inputs[start:end])
            grids.extend(search_grids(coding.run, images, search, bits, bar.update, prior, context))
    return grids


def default_search(coding: Coding, entropy_model: str = "auto") -> SearchConfig | None:
    """The search to run when the caller names none: `search.DEFAULT_GROUPED` when the run's grouped
    prior will code the files (entropy model "auto" or "grouped", one stage of codes), else None."""
    if entropy_model not in ("auto", "grouped") or coding.grouped() is None:
        return None
    return DEFAULT_GROUPED


def _grouped_search_prior(coding: Coding, search: SearchConfig, entropy_model: str) -> GroupedPrior | None:
    """The run's grouped prior as the search's rate when the rate is "auto" and the file may be coded
    with it (entropy model "auto" or "grouped"): a float32 copy on the run's device, eval mode. None
    when the run's prior is not a grouped one (or it has none)."""
    if search.rate != "auto" or entropy_model not in ("auto", "grouped") or coding.stages > 1:
        return None
    prior = load_run_prior(coding.run.path)
    return prior.float().eval().to(coding.run.device) if isinstance(prior, GroupedPrior) else None


def decode_grids(
    coding: Coding, grids: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    """(h, w) code grids ((n, h, w) stage grids of a residual VQ run) -> (H, W, C) uint8 images at
    ``sizes``, what decompressing their files gives, batching consecutive images of one size (and
    stage count)."""
    out: list[np.ndarray] = []
    for start, end in _groups([(*size, *g.shape[:-2]) for size, g in zip(sizes, grids, strict=True)]):
        out.extend(coding.run.decode(np.stack(grids[start:end]), sizes[start]))
    return out


def _quality(original: np.ndarray, recon: np.ndarray) -> tuple[float, float]:
    ref = to_float(torch.from_numpy(np.array(original[None])))  # np.array: a writable copy
    test = to_float(torch.from_numpy(np.array(recon[None])))
    psnr = min(float(psnr_per_image(ref, test)[0]), PSNR_CAP)
    return psnr, float(ssim_per_image(original[None], recon[None])[0])


def _record_bytes(r: Record) -> int:
    n = len(write_varint(r.height)) + len(write_varint(r.width)) + 1 + len(write_varint(r.codes_length))
    n += len(write_varint(r.stages))  # format version 4
    return n + (len(write_varint(r.alpha_length)) if r.mode.has_alpha else 0)


def encode_grids(
    coding: Coding, grids: Sequence[np.ndarray], model: EntropyModel, progress: bool = False
) -> tuple[list[bytes], list[float]]:
    """Entropy-code (h, w) grids: a codes payload per grid and its estimated bits (-log2 p);
    ``progress`` shows a bar over the codes for the prior (one prior step per code position)."""
    if coding.stages > 1:  # (n, h, w) stage grids of a residual VQ run
        return encode_stage_grids(coding, grids, model)
    k = coding.codebook_size
    if model is EntropyModel.RAW:
        return [raw_encode(g, k) for g in grids], [float(g.size * raw_bits(k)) for g in grids]
    payloads, bits = [b""] * len(grids), [0.0] * len(grids)
    if model is EntropyModel.STATIC:
        table = coding.static_table()
        for i, g in enumerate(grids):
            payloads[i], bits[i] = range_encode(g.reshape(-1), table), code_bits(table, g.reshape(-1))
        return payloads, bits
    if model is EntropyModel.GROUPED:
        return coding.require_grouped().encode(grids)
    encoders: dict[int, StreamEncoder] = {}
    total = sum(g.size for g in grids)
    with tqdm(total=total, desc="prior", unit="code", unit_scale=True, disable=not progress) as bar:
        # segment by segment: the tables of a big image, or of many, would not fit in memory at once
        for i, symbols, table, last in coding.require_prior(model).segments(grids):
            encoders.setdefault(i, StreamEncoder()).encode(symbols, table)
            bits[i] += code_bits(table, symbols)
            bar.update(len(symbols))
            if last:
                payloads[i] = encoders.pop(i).finish()
    return payloads, bits


def compress_images(
    run: Run | str | Path | Coding,
    images: Sequence[np.ndarray],
    *,
    entropy_model: str = "auto",
    archive: bool = False,
    names: Sequence[str] | None = None,
    prior: nn.Module | None = None,
    quality: bool = True,
    search: SearchConfig | None = None,
    progress: bool = False,
    scale: float = 1.0,
    stages: int | Sequence[int] | None = None,
) -> CompressResult:
    """Encode ``images`` into one .vqk per image (``archive=False``) or one archive; report the rates
    and (``quality=True``) PSNR and SSIM of what decompression gives. ``search`` chooses the codes by
    decoded error and rate (vqkit.codec.search) instead of nearest codes: slower, better; ``progress``
    shows progress bars for it and for coding with the prior (a few seconds per photo). ``scale``
    codes each image resampled to ``coded_size(H, W, scale)`` (more codes above 1, fewer below: a
    rate control for any run); decoding resamples back to H x W, and the rates count original pixels.
    ``stages`` (residual VQ runs): the stages coded, for every image or per image (default all S);
    vqkit.codec.targets picks them per image for a target rate or quality."""
    coding = run if isinstance(run, Coding) else Coding(run, prior)
    if not images:
        raise CodecError("nothing to compress: no images")
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        raise ValueError(f"scale must lie in [{SCALE_RANGE[0]}, {SCALE_RANGE[1]}], got {scale}")
    names = list(names) if names is not None else [f"image{i}" for i in range(len(images))]
    if len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} images")
    split = [_split(im, coding.run.channels, i) for i, im in enumerate(images)]
    coded = [coded_size(color.shape[0], color.shape[1], scale) for _, color, _ in split]
    for i, size in enumerate(coded):
        check_size(*size, f"image {i} at scale {scale:g}")
    inputs = [resample(color, size) for (_, color, _), size in zip(split, coded, strict=True)]
    if search is not None and scale != 1:
        # the search weighs squared errors of the coded picture, which has scale^2 pixels per original
        # pixel: lambda per original pixel's error stays the user's by scaling it alike
        search = replace(search, lmbda=search.lmbda * scale**2)
    counts = stage_counts(coding, stages, len(images))
    if search is not None and coding.stages > 1:
        raise CodecError("the code search (--search) is for single-stage runs, not residual VQ runs")
    grids = _encode(coding, inputs, search, progress, entropy_model)
    if coding.stages > 1:
        grids = [g[:n] for g, n in zip(grids, counts, strict=True)]  # (n, h, w): the first n stages
    best: tuple[EntropyModel, list[bytes], list[float]] | None = None
    for candidate in coding.candidates(entropy_model):  # "auto": the smallest payloads win
        trial_codes, trial_bits = encode_grids(coding, grids, candidate, progress)
        if best is None or sum(map(len, trial_codes)) < sum(map(len, best[1])):
            best = (candidate, trial_codes, trial_bits)
    assert best is not None  # candidates() always returns at least one model
    model, codes, est_bits = best
    fingerprint = coding.fingerprint(model)
    records, payloads = [], []
    for (mode, color, alpha), size, payload, n in zip(split, coded, codes, counts, strict=True):
        alpha_blob = b"" if alpha is None else zlib.compress(alpha.tobytes(), 9)
        height, width = color.shape[:2]
        resized = size if size != (height, width) else None
        records.append(Record(height, width, mode, len(payload), len(alpha_blob), resized, n))
        payloads.append(payload + alpha_blob)

    if archive:
        files = [build(model, fingerprint, records, payloads)]
        header = len(files[0]) - sum(len(p) for p in payloads)
        per_image_bytes = [_record_bytes(r) + len(p) for r, p in zip(records, payloads, strict=True)]
    else:
        files = [build(model, fingerprint, [r], [p]) for r, p in zip(records, payloads, strict=True)]
        header = sum(len(f) - len(p) for f, p in zip(files, payloads, strict=True))
        per_image_bytes = [len(f) for f in files]

    recons = decode_grids(coding, grids, [r.coded_size for r in records]) if quality else []
    reports = []
    for i, (rec, grid) in enumerate(zip(records, grids, strict=True)):
        pixels = rec.height * rec.width
        psnr = ssim = float("nan")
        if quality:
            original = np.ascontiguousarray(
                images[i].reshape(rec.height, rec.width, -1)[:, :, : rec.mode.color_channels]
            )
            psnr, ssim = _quality(original, _finish(_restore(recons[i], rec), rec.mode))
        reports.append(ImageReport(
            index=i, name=names[i], height=rec.height, width=rec.width, mode=rec.mode.name,
            grid=(int(grid.shape[-2]), int(grid.shape[-1])),
            bpp_nominal=math.log2(coding.codebook_size) * grid.size / pixels,  # grid.size counts n stages
            bpp_estimated=(est_bits[i] + 8 * rec.alpha_length) / pixels,
            bpp_actual=8 * per_image_bytes[i] / pixels,
            codes_bits_estimated=est_bits[i], codes_bytes=rec.codes_length, alpha_bytes=rec.alpha_length,
            psnr=psnr, ssim=ssim, stages=rec.stages,
        ))  # fmt: skip
    return CompressResult(files, model_name(model), header, reports, list(grids))


def _open(coding: Coding, data: bytes, name: str) -> Container:
    container = parse(bytes(data), name)
    check_stage_counts(coding, container, name)
    model = container.entropy_model
    if model is EntropyModel.STATIC and not coding.has_static():
        raise CodecError(f"{name} uses the static entropy model, which {coding.run.path} lacks")
    if (model in PRIOR_MODELS or model is EntropyModel.GROUPED) and coding.stages > 1:
        coding.refuse_prior_for_stages()
    if model in PRIOR_MODELS and coding.prior(model) is None:
        raise CodecError(f"{name} uses the prior, which {coding.run.path} lacks")
    if model is EntropyModel.GROUPED and coding.grouped() is None:
        raise CodecError(f"{name} uses the grouped prior, which {coding.run.path} lacks")
    if container.fingerprint != coding.fingerprint(model):
        raise CodecError(
            f"{name} was written with another model than {coding.run.path} (file fingerprint "
            f"{container.fingerprint.hex()}, run {coding.fingerprint(model).hex()} with the "
            f"{model_name(model)} entropy model): pass the run that compressed it"
        )
    return container


def decode_codes(
    run: Run | str | Path | Coding, data: bytes, *, name: str = "input", prior: nn.Module | None = None
) -> tuple[Container, list[np.ndarray]]:
    """Parse and entropy-decode a .vqk: its container and each image's (h, w) int64 code grid ((n, h, w)
    stage grids for a residual VQ run, n the image's stage count)."""
    return decode_codes_many(run, [data], names=[name], prior=prior)[0]


def decode_codes_many(
    run: Run | str | Path | Coding,
    files: Sequence[bytes],
    *,
    names: Sequence[str] | None = None,
    prior: nn.Module | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[tuple[Container, list[np.ndarray]]]:
    """`decode_codes` of several files at once: every file is parsed and checked first, then the images
    of all prior-coded files are decoded together, PRIOR_BATCH per step (docs/format.md: an image's
    tables do not depend on its batch neighbours), so a folder of one-image files decodes at the speed
    of an archive instead of one prior pass per file. ``progress`` gets the number of codes the prior
    has decoded, batch by batch (a photo takes seconds)."""
    coding = run if isinstance(run, Coding) else Coding(run, prior)
    names = list(names) if names is not None else [f"input{i}" for i in range(len(files))]
    if len(names) != len(files):
        raise ValueError(f"{len(names)} names for {len(files)} files")
    containers = [_open(coding, data, name) for data, name in zip(files, names, strict=True)]
    k = coding.codebook_size
    decoded: list[list[np.ndarray]] = []
    # per prior model: (file, image), payload and grid shape of each prior-coded image, in decoding order
    pending: dict[EntropyModel, list[tuple[int, int, bytes, tuple[int, int]]]] = {}
    for f, (container, data) in enumerate(zip(containers, files, strict=True)):
        grids: list[np.ndarray] = []
        static = container.entropy_model is EntropyModel.STATIC and coding.stages == 1
        table = coding.static_table() if static else None
        for i, (offset, rec) in enumerate(zip(container.offsets(), container.records, strict=True)):
            h, w = coding.grid_shape(*rec.coded_size)
            payload = bytes(data[offset : offset + rec.codes_length])
            if coding.stages > 1:  # (n, h, w) stage grids of a residual VQ run
                grids.append(decode_stage_grid(coding, container.entropy_model, payload, rec, (h, w)))
            elif container.entropy_model in (*PRIOR_MODELS, EntropyModel.GROUPED):
                pending.setdefault(container.entropy_model, []).append((f, i, payload, (h, w)))
                grids.append(np.empty(0))  # filled below
            elif table is None:
                grids.append(raw_decode(payload, k, h * w).reshape(h, w))
            else:
                grids.append(range_decode(payload, table, h * w).reshape(h, w))
        decoded.append(grids)
    for model, items in pending.items():
        coder = coding.require_grouped() if model is EntropyModel.GROUPED else coding.require_prior(model)
        out = coder.decode([p for _, _, p, _ in items], [s for _, _, _, s in items], progress)
        for (f, i, _, _), grid in zip(items, out, strict=True):
            decoded[f][i] = grid
    return list(zip(containers, decoded, strict=True))


def _alpha(blob: bytes, height: int, width: int, name: str, index: int) -> np.ndarray:
    inflater = zlib.decompressobj()
    try:
        plane = inflater.decompress(blob, height * width + 1)  # bounded: never more than one plane
    except zlib.error as e:
        raise CodecError(f"{name}: corrupt alpha plane of image {index} ({e})") from e
    if len(plane) != height * width or not inflater.eof or inflater.unused_data:
        raise CodecError(f"{name}: corrupt alpha plane of image {index}")
    return np.frombuffer(plane, dtype=np.uint8).reshape(height, width, 1)


def decompress(
    run: Run | str | Path | Coding, data: bytes, *, name: str = "input", prior: nn.Module | None = None
) -> list[np.ndarray]:
    """A .vqk file's bytes -> its images, (H, W, C) uint8 in their original sizes and modes."""
    return decompress_many(run, [data], names=[name], prior=prior)[0]


def decompress_many(
    run: Run | str | Path | Coding,
    files: Sequence[bytes],
    *,
    names: Sequence[str] | None = None,
    prior: nn.Module | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[list[np.ndarray]]:
    """Several .vqk files' bytes -> each file's images. The codes are exactly those `decompress` gives
    file by file; the prior and the VQ-VAE decoder run over all files together (much faster for many
    small files), so a pixel may differ by one level from a one-file decode (docs/format.md).
    ``progress`` as in `decode_codes_many`."""
    coding = run if isinstance(run, Coding) else Coding(run, prior)
    names = list(names) if names is not None else [f"input{i}" for i in range(len(files))]
    parsed = decode_codes_many(coding, files, names=names, prior=prior, progress=progress)
    return images_from_codes(coding, parsed, files, names)


def images_from_codes(
    coding: Coding,
    parsed: Sequence[tuple[Container, list[np.ndarray]]],
    files: Sequence[bytes],
    names: Sequence[str],
) -> list[list[np.ndarray]]:
    """The second half of `decompress_many`: `decode_codes_many`'s containers and code grids (with the
    files' bytes, for the alpha planes) -> each file's images, the VQ-VAE decoder run over all grids
    together. For a caller that wants the grids too without decoding the entropy coding twice."""
    records = [rec for container, _ in parsed for rec in container.records]
    grids = [grid for _, file_grids in parsed for grid in file_grids]
    recons = iter(decode_grids(coding, grids, [r.coded_size for r in records]))
    out: list[list[np.ndarray]] = []
    for (container, _), data, name in zip(parsed, files, names, strict=True):
        images = []
        for i, (rec, offset) in enumerate(zip(container.records, container.offsets(), strict=True)):
            image = _finish(_restore(next(recons), rec), rec.mode)
            if rec.mode.has_alpha:
                start = offset + rec.codes_length
                alpha = _alpha(bytes(data[start : start + rec.alpha_length]), rec.height, rec.width, name, i)
                image = np.concatenate([image, alpha], axis=2)
            images.append(np.ascontiguousarray(image))
        out.append(images)
    return out
