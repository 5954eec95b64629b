"""Entropy coding with an autoregressive prior: a stand-in causal model and the real CodePrior."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vqkit.codec import CodecError, Coding, EntropyModel, compress_images, decode_codes
from vqkit.codec.entropy import PRIOR_BATCH, exact_torch, prior_chunks

from .golden.make_golden import blob_images, build_tiny_run, tiny_prior


@dataclass(frozen=True)
class StandInConfig:
    codebook_size: int
    grid: tuple[int, int]


class BigramPrior(nn.Module):
    """p(x_t | x_<t) from the previous code and the position only: causal by construction."""

    def __init__(self, codebook_size: int, grid: tuple[int, int], seed: int = 0) -> None:
        super().__init__()
        self.config = StandInConfig(codebook_size, grid)
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(2 * torch.randn(codebook_size + 1, codebook_size, generator=g))
        self.position = nn.Parameter(torch.randn(grid[0] * grid[1], codebook_size, generator=g))

    def logits(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        flat = indices.reshape(len(indices), -1)
        start = torch.full((len(indices), 1), self.config.codebook_size, dtype=torch.long)
        return self.table[torch.cat([start, flat[:, :-1]], dim=1)] + self.position  # (B, T, K)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_run(tmp_path_factory.mktemp("prior") / "run")


def _grids(coding: Coding, images: list[np.ndarray]) -> list[np.ndarray]:
    return coding.run.encode(images)


@pytest.mark.parametrize("archive", [True, False])
def test_prior_round_trip_is_bit_exact(run: Path, archive: bool) -> None:
    prior = BigramPrior(16, (4, 4))
    images = blob_images(PRIOR_BATCH + 5, (16, 16), 3)  # more than one chunk
    coding = Coding(run, prior)
    result = compress_images(coding, images, entropy_model="prior", archive=archive, quality=False)
    assert result.entropy_model == "prior"
    decoded = [g for f in result.files for g in decode_codes(Coding(run, prior), f)[1]]
    for got, want in zip(decoded, _grids(coding, images), strict=True):
        np.testing.assert_array_equal(got, want)


def test_prior_estimate_matches_file_payload_within_one_percent(run: Path) -> None:
    prior = BigramPrior(16, (16, 16), seed=1)
    images = blob_images(24, (64, 64), 4)
    result = compress_images(run, images, entropy_model="prior", prior=prior, archive=True, quality=False)
    summary = result.summary()
    assert abs(summary["codes_overhead"]) < 0.01, summary  # file payload bits vs sum of -log2 p


def test_auto_tries_the_prior_only_for_its_grid(run: Path) -> None:
    coding = Coding(run, BigramPrior(16, (4, 4)))
    prior, static, raw = EntropyModel.PRIOR, EntropyModel.STATIC, EntropyModel.RAW
    assert coding.candidates("auto", [(4, 4), (4, 4)]) == [prior, static, raw]
    assert coding.candidates("auto", [(4, 4), (5, 4)]) == [static, raw]
    with pytest.raises(CodecError, match="grids"):
        compress_images(coding, blob_images(1, (20, 16), 6), entropy_model="prior", quality=False)


def test_another_prior_cannot_decode(run: Path) -> None:
    images = blob_images(2, (16, 16), 7)
    prior = BigramPrior(16, (4, 4), seed=0)
    data = compress_images(run, images, entropy_model="prior", prior=prior, archive=True).files[0]
    with pytest.raises(CodecError, match="another model"):
        decode_codes(run, data, prior=BigramPrior(16, (4, 4), seed=1))


def test_the_callers_prior_is_left_as_it_was(run: Path) -> None:
    prior = BigramPrior(16, (4, 4))
    compress_images(run, blob_images(1, (16, 16), 8), prior=prior, quality=False)
    assert prior.table.dtype == torch.float32


def test_chunks_follow_file_order_and_grid_shape() -> None:
    shapes = [(4, 4)] * (PRIOR_BATCH + 1) + [(2, 2), (4, 4)]
    chunks = prior_chunks(shapes)
    assert chunks == [list(range(PRIOR_BATCH)), [PRIOR_BATCH], [PRIOR_BATCH + 1], [PRIOR_BATCH + 2]]


def test_real_prior_rows_ignore_later_positions_bitwise() -> None:
    """What decoding relies on: row t of the CodePrior's logits never sees positions >= t."""
    prior = tiny_prior(16, (4, 4), seed=3).double()
    grids = torch.randint(0, 16, (5, 4, 4), generator=torch.Generator().manual_seed(0))
    with exact_torch():
        full = prior.logits(grids)
        for t in range(16):
            partial = grids.clone().reshape(5, -1)
            partial[:, t:] = 0
            assert torch.equal(prior.logits(partial.reshape(5, 4, 4))[:, t], full[:, t])


def test_real_prior_round_trip(run: Path) -> None:
    prior = tiny_prior(16, (4, 4), seed=4)
    images = blob_images(6, (16, 16), 9)
    result = compress_images(run, images, entropy_model="prior", prior=prior, archive=True, quality=False)
    coding = Coding(run, prior)
    _, decoded = decode_codes(coding, result.files[0])
    for got, want in zip(decoded, _grids(coding, images), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_calibrated_prior_is_another_model(run: Path) -> None:
    """The logit scale is part of the model: a file coded with a calibrated prior decodes with it, and
    the uncalibrated prior refuses it instead of decoding garbage."""
    prior = tiny_prior(16, (4, 4), seed=5)
    calibrated = copy.deepcopy(prior)
    calibrated.logit_scale.fill_(0.8)
    images = blob_images(3, (16, 16), 10)
    data = compress_images(run, images, entropy_model="prior", prior=calibrated, archive=True).files[0]
    _, decoded = decode_codes(run, data, prior=calibrated)
    for got, want in zip(decoded, Coding(run).run.encode(images), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(CodecError, match="another model"):
        decode_codes(run, data, prior=prior)
