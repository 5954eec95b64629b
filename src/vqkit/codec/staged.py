"""Codes payloads of residual VQ runs: an image's first n of S stage grids, in stage order.

A run of S stages writes, per image, n (1 <= n <= S, the record's stage count, format version 4) code
grids of (h, w), stage 1 first. Raw (entropy model 0) packs the n grids one after another as one
sequence of ceil(log2 K)-bit codes; static (1) range-codes them on one coder, stage s under its own
table (``entropy_static.json`` holds one per stage). The prior entropy models (2, 3) model a single
grid per image and refuse these runs. Single-stage runs never come here: their payloads are those
vqkit always wrote (vqkit.codec.api).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vqkit.codec.coder import range_decode_stages, range_encode_stages, raw_bits, raw_decode, raw_encode
from vqkit.codec.coding import Coding
from vqkit.codec.container import CodecError, Container, EntropyModel, Record
from vqkit.codec.tables import code_bits


def check_stage_counts(coding: Coding, container: Container, name: str) -> None:
    """Every image of ``container`` must hold 1 to S stages of the run's codes."""
    for i, rec in enumerate(container.records):
        if not 1 <= rec.stages <= coding.stages:
            raise CodecError(
                f"{name}: image {i} holds {rec.stages} stages of codes, but {coding.run.path} has "
                f"{coding.stages} (a corrupt file, or another run's)"
            )


def encode_stage_grids(
    coding: Coding, grids: Sequence[np.ndarray], model: EntropyModel
) -> tuple[list[bytes], list[float]]:
    """(n, h, w) stage grids (n may differ per image) -> a codes payload per image and its estimated
    bits (-log2 p under the coding tables)."""
    k = coding.codebook_size
    if model is EntropyModel.RAW:
        return [raw_encode(g.reshape(-1), k) for g in grids], [float(g.size * raw_bits(k)) for g in grids]
    if model is not EntropyModel.STATIC:
        coding.refuse_prior_for_stages()
    tables = coding.static_tables()  # (S, K)
    payloads, bits = [], []
    for g in grids:
        stages = list(g.reshape(g.shape[0], -1))
        payloads.append(range_encode_stages(stages, tables[: len(stages)]))
        bits.append(sum(code_bits(tables[s], stage) for s, stage in enumerate(stages)))
    return payloads, bits


def decode_stage_grid(
    coding: Coding, model: EntropyModel, payload: bytes, rec: Record, shape: tuple[int, int]
) -> np.ndarray:
    """One image's payload -> its (n, h, w) int64 stage grids, n = ``rec.stages``."""
    n, (h, w) = rec.stages, shape
    if model is EntropyModel.RAW:
        return raw_decode(payload, coding.codebook_size, n * h * w).reshape(n, h, w)
    if model is not EntropyModel.STATIC:
        coding.refuse_prior_for_stages()
    return range_decode_stages(payload, coding.static_tables()[:n], h * w).reshape(n, h, w)


def stage_counts(coding: Coding, stages: int | Sequence[int] | None, count: int) -> list[int]:
    """The stages each of ``count`` images is coded with: all S when None, else the one number or
    the per-image list given, each in 1..S. A single-stage run takes only None (or 1)."""
    wanted = [coding.stages] * count if stages is None else stages
    per_image = [wanted] * count if isinstance(wanted, int) else list(wanted)
    if len(per_image) != count:
        raise ValueError(f"{len(per_image)} stage counts for {count} images")
    if coding.stages == 1 and any(n != 1 for n in per_image):
        raise CodecError(
            f"{coding.run.path} has one stage of codes (quantizer.kind "
            f"{coding.run.config.model.quantizer.kind}); stage counts are for residual VQ (rvq) runs"
        )
    bad = [n for n in per_image if not 1 <= n <= coding.stages]
    if bad:
        raise CodecError(f"stage counts must lie in 1..{coding.stages} for {coding.run.path}, got {bad[0]}")
    return per_image
