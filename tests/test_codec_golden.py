"""Golden .vqk files: committed bytes must keep decoding to the same codes, on any machine, forever.

Never skipped. If one fails, the bitstream changed: either a bug, or a deliberate format change that
needs a new FORMAT_VERSION (old files must still decode) and regenerated files
(``VQKIT_MAKE_GOLDEN=1 .venv/bin/python -m tests.golden.make_golden``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vqkit.codec import Coding, EntropyModel, decode_codes, decompress, parse
from vqkit.codec.api import encode_grids

from .golden.make_golden import in_version

GOLDEN = Path(__file__).resolve().parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


MODELS = {  # golden file -> the entropy model that wrote it
    "raw": EntropyModel.RAW,
    "static": EntropyModel.STATIC,
    "prior": EntropyModel.PRIOR,
    "prior_overlap": EntropyModel.PRIOR_OVERLAP,
    "scaled": EntropyModel.STATIC,  # images coded at 1.5 times their size (format version 2)
}
NAMES = list(MODELS)


@pytest.fixture(scope="module")
def coding() -> Coding:
    return Coding(GOLDEN / "run")


@pytest.mark.parametrize("name", NAMES)
def test_golden_file_decodes_to_the_stored_codes(coding: Coding, name: str) -> None:
    data = (GOLDEN / f"{name}.vqk").read_bytes()
    expected = EXPECTED[name]
    assert hashlib.sha256(data).hexdigest() == expected["sha256"], "the committed file itself changed"
    container, grids = decode_codes(coding, data, name=name)
    assert container.entropy_model is MODELS[name]
    assert container.version == (2 if name == "scaled" else 1)
    assert len(grids) == len(expected["indices"])
    for grid, want in zip(grids, expected["indices"], strict=True):
        assert grid.dtype == np.int64
        np.testing.assert_array_equal(grid, np.array(want, dtype=np.int64))


@pytest.mark.parametrize("name", NAMES)
def test_golden_codes_encode_to_the_same_payloads(coding: Coding, name: str) -> None:
    """The encoder side is frozen too: the stored codes entropy-code to the committed payload bytes."""
    data = (GOLDEN / f"{name}.vqk").read_bytes()
    container = parse(data)
    grids = [np.array(g, dtype=np.int64) for g in EXPECTED[name]["indices"]]
    payloads, _ = encode_grids(coding, grids, container.entropy_model)
    for payload, offset, record in zip(payloads, container.offsets(), container.records, strict=True):
        assert payload == data[offset : offset + record.codes_length]


def test_golden_decodes_to_images_of_the_original_sizes_and_modes(coding: Coding) -> None:
    images = decompress(coding, (GOLDEN / "static.vqk").read_bytes())
    expected = EXPECTED["static"]
    assert [list(im.shape) for im in images] == expected["sizes"]
    for image, alpha_sha in zip(images, expected["alpha_sha256"], strict=True):
        assert image.dtype == np.uint8
        if alpha_sha is not None:  # alpha is lossless
            assert hashlib.sha256(image[:, :, -1].tobytes()).hexdigest() == alpha_sha


def test_golden_scaled_file_decodes_to_the_original_sizes_from_its_coded_sizes(coding: Coding) -> None:
    data = (GOLDEN / "scaled.vqk").read_bytes()
    expected = EXPECTED["scaled"]
    container = parse(data)
    # 16x16, 12x20 and 10x6 images coded at 1.5 times their size
    assert [r.coded_size for r in container.records] == [(24, 24), (18, 30), (15, 9)]
    images = decompress(coding, data)
    assert [list(im.shape) for im in images] == expected["sizes"]
    assert hashlib.sha256(images[2][:, :, -1].tobytes()).hexdigest() == expected["alpha_sha256"][2]


def test_golden_decoding_ignores_the_callers_thread_count(coding: Coding) -> None:
    data = (GOLDEN / "prior.vqk").read_bytes()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, grids = decode_codes(coding, data)
        assert torch.get_num_threads() == 2  # restored after the prior's one-thread section
    finally:
        torch.set_num_threads(before)
    for grid, want in zip(grids, EXPECTED["prior"]["indices"], strict=True):
        np.testing.assert_array_equal(grid, np.array(want))


def test_golden_single_image_header_is_small() -> None:
    container = parse((GOLDEN / "raw.vqk").read_bytes())
    # magic 2 + version 1 + entropy model 1 + fingerprint 6 + count 1, then height, width, mode, length
    assert container.header_bytes == 11 + 4


# ---- format version 4: a stage count per image ---------------------------------------------------

V4 = GOLDEN / "v4"
V4_EXPECTED = json.loads((V4 / "expected.json").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_version_4_golden_files_are_the_old_payloads_with_one_stage_each(coding: Coding, name: str) -> None:
    """Version 4 adds a stage count to each index entry (1 for a single-stage run) and keeps every
    payload byte; the older files and the new ones decode to the same stored codes."""
    old = (GOLDEN / f"{name}.vqk").read_bytes()
    new = (V4 / f"{name}.vqk").read_bytes()
    assert new == in_version(old, 4)
    assert parse(new).version == 4 and all(r.stages == 1 for r in parse(new).records)
    assert len(new) == len((GOLDEN / "v3" / f"{name}.vqk").read_bytes()) + len(parse(new).records)
    _, grids = decode_codes(coding, new, name=name)
    for grid, want in zip(grids, EXPECTED[name]["indices"], strict=True):
        np.testing.assert_array_equal(grid, np.array(want, dtype=np.int64))


@pytest.fixture(scope="module")
def rvq_coding() -> Coding:
    return Coding(V4 / "rvq_run")


@pytest.mark.parametrize("name", ["rvq_raw", "rvq_static"])
def test_golden_residual_files_decode_to_the_stored_stage_grids(rvq_coding: Coding, name: str) -> None:
    data = (V4 / f"{name}.vqk").read_bytes()
    expected = V4_EXPECTED[name]
    assert hashlib.sha256(data).hexdigest() == expected["sha256"], "the committed file itself changed"
    container, grids = decode_codes(rvq_coding, data, name=name)
    assert container.version == 4 and rvq_coding.stages == 3
    assert [r.stages for r in container.records] == V4_EXPECTED["stages"] == [3, 1, 2]
    for grid, want in zip(grids, expected["indices"], strict=True):
        assert grid.dtype == np.int64
        np.testing.assert_array_equal(grid, np.array(want, dtype=np.int64))  # (n, h, w)
    images = decompress(rvq_coding, data)
    assert [list(im.shape) for im in images] == expected["sizes"]


@pytest.mark.parametrize("name", ["rvq_raw", "rvq_static"])
def test_golden_residual_stage_grids_encode_to_the_same_payloads(rvq_coding: Coding, name: str) -> None:
    data = (V4 / f"{name}.vqk").read_bytes()
    container = parse(data)
    grids = [np.array(g, dtype=np.int64) for g in V4_EXPECTED[name]["indices"]]
    payloads, _ = encode_grids(rvq_coding, grids, container.entropy_model)
    for payload, offset, record in zip(payloads, container.offsets(), container.records, strict=True):
        assert payload == data[offset : offset + record.codes_length]


# ---- format version 5: the compact layout (one file checksum, stage counts only above 1) -----------

V5 = GOLDEN / "v5"


@pytest.mark.parametrize("name", NAMES)
def test_version_5_golden_files_are_the_old_payloads_in_the_compact_layout(coding: Coding, name: str) -> None:
    old = (GOLDEN / f"{name}.vqk").read_bytes()
    new = (V5 / f"{name}.vqk").read_bytes()
    assert new == in_version(old, 5) and parse(new).version == 5
    # per file: 4 bytes of checksum instead of 4 per image plus 4, and no stage count for 1 stage
    n = len(parse(old).records)
    assert len(new) == len(in_version(old, 4)) - 4 * n - n
    container, grids = decode_codes(coding, new, name=name)
    assert container.entropy_model is MODELS[name]
    for grid, want in zip(grids, EXPECTED[name]["indices"], strict=True):
        np.testing.assert_array_equal(grid, np.array(want, dtype=np.int64))


def test_version_5_single_image_header_is_19_bytes() -> None:
    container = parse((V5 / "raw.vqk").read_bytes())
    # magic 2 + version 1 + model 1 + file CRC-32 4 + fingerprint 6 + count 1, height, width, mode, length
    assert container.header_bytes == 11 + 4 + 4


@pytest.mark.parametrize("name", ["rvq_raw", "rvq_static"])
def test_version_5_residual_files_keep_their_stage_counts(rvq_coding: Coding, name: str) -> None:
    """Images of 3 and 2 stages carry the STAGED flag and their count; the 1-stage image none."""
    data = (V5 / f"{name}.vqk").read_bytes()
    assert data == in_version((V4 / f"{name}.vqk").read_bytes(), 5)
    container, grids = decode_codes(rvq_coding, data, name=name)
    assert container.version == 5 and [r.stages for r in container.records] == [3, 1, 2]
    for grid, want in zip(grids, V4_EXPECTED[name]["indices"], strict=True):
        np.testing.assert_array_equal(grid, np.array(want, dtype=np.int64))


@pytest.mark.parametrize(
    ("folder", "version", "integer_format", "schedule"), [(V4, 4, 2, "4x4-8"), (V5, 5, 3, "8x8-7")]
)
def test_golden_grouped_file_decodes_to_the_stored_codes_and_reencodes_to_its_bytes(
    folder: Path, version: int, integer_format: int, schedule: str
) -> None:
    """Entropy model 4: the integer network's tables, hi and lo parts, step by step, must not change:
    in index order (integer prior format 2) and under a code order (format 3, with the 8x8-7 schedule)."""
    from vqkit.priors.integer import IntegerPrior
    from vqkit.runs.layout import INTEGER_PRIOR_FILE

    data = (folder / "grouped.vqk").read_bytes()
    expected = json.loads((folder / "grouped.json").read_text())
    assert hashlib.sha256(data).hexdigest() == expected["sha256"], "the committed file itself changed"
    prior = IntegerPrior.load(folder / "grouped_run" / INTEGER_PRIOR_FILE)
    assert prior.format_version == integer_format and prior.schedule == schedule
    coding = Coding(folder / "grouped_run")
    container, grids = decode_codes(coding, data, name="grouped")
    assert container.entropy_model is EntropyModel.GROUPED and container.version == version
    for grid, want in zip(grids, expected["indices"], strict=True):
        np.testing.assert_array_equal(grid, np.array(want, dtype=np.int64))
    payloads, _ = encode_grids(coding, grids, EntropyModel.GROUPED)
    for payload, offset, record in zip(payloads, container.offsets(), container.records, strict=True):
        assert payload == data[offset : offset + record.codes_length]
    assert [list(im.shape) for im in decompress(coding, data)] == expected["sizes"]
