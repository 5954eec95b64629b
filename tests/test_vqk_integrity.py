"""Format version 3: a CRC-32 over the header and one over each image's payloads (version 5: one over
the whole file), so a damaged file is one clear CodecError, never silently wrong pixels; files of
versions 1 and 2 still decode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vqkit.codec import CodecError, Coding, decode_codes, decompress, parse
from vqkit.codec.container import CRC_BYTES, build

GOLDEN = Path(__file__).resolve().parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
NAMES = ("raw", "static", "prior", "prior_overlap", "scaled")


@pytest.fixture(scope="module")
def coding() -> Coding:
    return Coding(GOLDEN / "run")


def rebuilt(data: bytes, version: int = 3) -> bytes:
    """The same images and payloads in another container version."""
    c = parse(data)
    payloads = [
        data[o : o + r.codes_length + r.alpha_length] for o, r in zip(c.offsets(), c.records, strict=True)
    ]
    return build(c.entropy_model, c.fingerprint, list(c.records), payloads, version=version)


@pytest.mark.parametrize("name", NAMES)
def test_version_3_golden_files_are_the_old_payloads_with_checksums(coding: Coding, name: str) -> None:
    """The committed version-3 golden files hold exactly the version-1/2 files' payloads: the
    checksums change the header only, and both decode to the stored codes."""
    old = (GOLDEN / f"{name}.vqk").read_bytes()
    new = (GOLDEN / "v3" / f"{name}.vqk").read_bytes()
    assert new == rebuilt(old) and parse(new).version == 3 and parse(old).version in (1, 2)
    for data in (old, new):
        _, grids = decode_codes(coding, data)
        for grid, want in zip(grids, EXPECTED[name]["indices"], strict=True):
            np.testing.assert_array_equal(grid, np.array(want, dtype=np.int64))


@pytest.mark.parametrize("version", ["v3", "v5"])
@pytest.mark.parametrize("name", ["raw", "static", "prior"])
def test_every_single_bit_flip_is_refused(coding: Coding, name: str, version: str) -> None:
    """CRC-32 detects every burst of up to 32 bits: no flipped bit anywhere (header, index,
    checksums, payloads) decodes, under the per-part checksums (3) and the one file checksum (5)."""
    data = (GOLDEN / version / f"{name}.vqk").read_bytes()
    decoded = 0
    for byte in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[byte] ^= 1 << bit
            try:
                decompress(coding, bytes(damaged))
                decoded += 1
            except CodecError:
                pass
    assert decoded == 0


def test_a_header_flip_that_would_change_size_or_mode_names_the_checksum(coding: Coding) -> None:
    data = bytearray((GOLDEN / "v3" / "static.vqk").read_bytes())
    data[11] ^= 1  # the first image's height: 32 -> 33 in a version-1 file decoded silently
    with pytest.raises(CodecError, match="header checksum"):
        decompress(coding, bytes(data))


def test_a_payload_flip_names_the_image(coding: Coding) -> None:
    data = bytearray((GOLDEN / "v3" / "static.vqk").read_bytes())
    c = parse(bytes(data))
    data[c.offsets()[1]] ^= 0x10
    with pytest.raises(CodecError, match="image 1's payload checksum"):
        decompress(coding, bytes(data))


def test_a_version_5_flip_anywhere_names_the_file_checksum(coding: Coding) -> None:
    data = (GOLDEN / "v5" / "static.vqk").read_bytes()
    c = parse(data)
    for pos in (15, c.offsets()[1]):  # the first image's height; the second image's payload
        damaged = bytearray(data)
        damaged[pos] ^= 1
        with pytest.raises(CodecError, match="file checksum"):
            decompress(coding, bytes(damaged))


@pytest.mark.parametrize("name", ["raw", "prior"])
def test_a_version_5_file_read_as_another_version_never_decodes(coding: Coding, name: str) -> None:
    """Behind its checksum a version 5 index reads like a version 1 index, so the checksum sits before
    the fingerprint: with the version byte changed to any other (a damaged file), and any one length
    byte changed too (one that could swallow the checksum), the file is refused."""
    data = (GOLDEN / "v5" / f"{name}.vqk").read_bytes()
    c = parse(data)
    for version in (1, 2, 3, 4):
        for pos in [None, *range(15, c.payload_offset)]:
            for delta in (4, 252) if pos is not None else (0,):
                damaged = bytearray(data)
                damaged[2] = version
                if pos is not None:
                    damaged[pos] = (damaged[pos] + delta) % 256
                with pytest.raises(CodecError):
                    decompress(coding, bytes(damaged))


def test_version_5_refuses_a_stage_count_of_one_behind_the_flag() -> None:
    """One stage is written as no count; the flag with a count of 1 is a second form of the same
    file, refused (after the checksum, which a hand-made file can match)."""
    from vqkit.codec.container import STAGED, _file_crc

    data = (GOLDEN / "v5" / "raw.vqk").read_bytes()
    forged = bytearray(data)
    forged[17] |= STAGED  # the mode byte after magic, version, model, checksum, fingerprint, count, H, W
    forged[18:18] = b"\x01"
    forged[4:8] = _file_crc(bytes(forged))
    with pytest.raises(CodecError, match="stage count of 1"):
        parse(bytes(forged))


def test_checksums_cost_four_bytes_per_image_and_four_per_file() -> None:
    old = (GOLDEN / "static.vqk").read_bytes()
    n = len(parse(old).records)
    assert len(rebuilt(old)) == len(old) + CRC_BYTES * (n + 1)


@pytest.mark.parametrize("name", NAMES)
def test_older_layouts_are_written_byte_for_byte_as_before(name: str) -> None:
    """build(version=1 or 2) reproduces the committed files of vqkit 0.1, so the readers of those
    versions stay tested against the real layout."""
    old = (GOLDEN / f"{name}.vqk").read_bytes()
    assert rebuilt((GOLDEN / "v3" / f"{name}.vqk").read_bytes(), parse(old).version) == old


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(NAMES),
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4
    ),
    st.integers(0, 3),
    st.sampled_from(["v3", "v5"]),
)
def test_a_damaged_version_3_or_5_file_is_refused_or_decodes_unchanged(
    coding: Coding, name: str, edits: list[tuple[int, int, int]], cut: int, version: str
) -> None:
    """The short form of benchmarks/fuzz_codec.py: flips, inserts, deletes and a cut; a file that
    still decodes must give exactly the original images (the edits cancelled out)."""
    data = (GOLDEN / version / f"{name}.vqk").read_bytes()
    out = bytearray(data)
    for kind, pos, value in edits:
        i = pos % len(out) if out else 0
        if kind == 0 and out:
            out[i] ^= value
        elif kind == 1:
            out.insert(i, value)
        elif kind == 2 and out:
            del out[i]
    damaged = bytes(out[: max(0, len(out) - cut)])
    try:
        images = decompress(coding, damaged)
    except CodecError:
        return
    original = decompress(coding, data)
    assert len(images) == len(original)
    assert all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(images, original, strict=True))
