"""The .vqk container, integer probability tables and entropy coder: properties, bad input and fuzzing."""

from __future__ import annotations

from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vqkit.codec import CodecError, Coding, EntropyModel, decompress, parse
from vqkit.codec.coder import StepDecoder, StreamEncoder, range_decode, range_encode, raw_decode, raw_encode
from vqkit.codec.container import MAX_SIDE, Mode, Record, _Reader, build, write_varint
from vqkit.codec.tables import TOTAL, code_bits, frequencies_from_counts, frequencies_from_logits
from vqkit.data import DataError

GOLDEN = Path(__file__).resolve().parent / "golden"
FILES = {name: (GOLDEN / f"{name}.vqk").read_bytes() for name in ("raw", "static", "prior", "prior_overlap")}


@pytest.fixture(scope="module")
def coding() -> Coding:
    return Coding(GOLDEN / "run")


# ---- varints and container -----------------------------------------------------------------------


@given(st.integers(0, 2**35 - 1))
def test_varint_round_trips_and_is_minimal(value: int) -> None:
    data = write_varint(value)
    assert len(data) == max(1, (value.bit_length() + 6) // 7)
    reader = _Reader(data + b"rest", "test")
    assert reader.varint("value", 2**35) == value and reader.left == 4


def test_container_index_addresses_each_payload() -> None:
    records = [Record(5, 7, Mode.RGB, 3), Record(9, 2, Mode.RGBA, 2, 4), Record(1, 300, Mode.L, 0)]
    payloads = [b"abc", b"de" + b"ALPH", b""]
    data = build(EntropyModel.STATIC, b"123456", records, payloads)
    c = parse(data)
    assert c.records == tuple(records) and c.fingerprint == b"123456"
    assert [data[o : o + r.codes_length] for o, r in zip(c.offsets(), c.records, strict=True)] == [
        b"abc",
        b"de",
        b"",
    ]


@pytest.mark.parametrize("version", [2, 3, 4])
def test_resampled_images_carry_their_coded_size(version: int) -> None:
    plain = [Record(5, 7, Mode.RGB, 3), Record(9, 2, Mode.RGBA, 2, 4, coded=(9, 2))]  # equal: not resampled
    payloads = [b"abc", b"de" + b"ALPH"]
    data = build(EntropyModel.STATIC, b"123456", plain, payloads, version=version)
    assert data[2] == version and parse(data).version == version
    assert [r.coded_size for r in parse(data).records] == [(5, 7), (9, 2)]
    resampled = [Record(5, 7, Mode.RGB, 3, coded=(10, 14)), Record(9, 2, Mode.RGBA, 2, 4, coded=(4, 1))]
    data = build(EntropyModel.STATIC, b"123456", resampled, payloads, version=version)
    c = parse(data)
    assert data[2] == version and c.version == version and c.records == tuple(resampled)
    assert [r.coded_size for r in c.records] == [(10, 14), (4, 1)]
    assert [data[o : o + r.codes_length] for o, r in zip(c.offsets(), c.records, strict=True)] == [
        b"abc",
        b"de",
    ]
    assert len(data) == len(build(EntropyModel.STATIC, b"123456", plain, payloads, version=version)) + 4
    with pytest.raises(ValueError, match="version 1"):
        build(EntropyModel.STATIC, b"123456", resampled, payloads, version=1)  # needs the 0x80 flag


# ---- integer tables ------------------------------------------------------------------------------


@given(st.lists(st.floats(-40, 40, allow_nan=False), min_size=2, max_size=64), st.floats(-100, 100))
def test_logit_tables_are_positive_normalised_and_shift_invariant(logits: list[float], shift: float) -> None:
    x = np.array([logits])
    freq = frequencies_from_logits(x)
    assert freq.dtype == np.int64 and freq.min() >= 1 and freq.sum() == TOTAL
    q = np.rint(x[0] * 4096)
    larger = q[:, None] > q[None, :]  # a larger (quantized) logit never gets a smaller frequency
    assert (freq[0][:, None] >= freq[0][None, :])[larger].all()
    q = np.rint(x * 4096) / 4096  # shifting by a multiple of the grid leaves the table unchanged
    np.testing.assert_array_equal(
        frequencies_from_logits(q + round(shift * 4096) / 4096), frequencies_from_logits(q)
    )


def test_logit_tables_follow_the_softmax() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (32, 512))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = frequencies_from_logits(logits) / TOTAL
    kl_bits = (p * np.log2(p / q)).sum(1)
    assert kl_bits.max() < 2e-3  # integer rounding costs under 0.002 bits per code


def test_count_tables_smooth_every_code() -> None:
    freq = frequencies_from_counts(np.array([0, 1000, 0, 3]))
    assert freq.sum() == TOTAL and freq.min() >= 1
    assert freq[1] > freq[3] > freq[0] == freq[2]


# ---- entropy coder -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 600), st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_range_coder_round_trips(k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 50, k) * (rng.random(k) < 0.5)
    freq = frequencies_from_counts(counts)
    symbols = rng.choice(k, size=n, p=freq / TOTAL)
    payload = range_encode(symbols, freq)
    np.testing.assert_array_equal(range_decode(payload, freq, n), symbols)
    assert 8 * len(payload) <= code_bits(freq, symbols) + 16  # trimmed termination: under 2 bytes
    np.testing.assert_array_equal(raw_decode(raw_encode(symbols, k), k, n), symbols)


def test_per_symbol_tables_round_trip() -> None:
    rng = np.random.default_rng(1)
    freq = frequencies_from_logits(rng.normal(0, 2, (50, 40)))
    symbols = np.array([rng.choice(40, p=f / TOTAL) for f in freq])
    payload = range_encode(symbols, freq)
    step = StepDecoder(payload)
    assert [step(f) for f in freq] == symbols.tolist()


@pytest.mark.parametrize("keep_bytes", [None, 0, 20 * 40 * 8])
def test_a_stream_encoder_fed_in_pieces_writes_what_range_encode_writes(keep_bytes: int | None) -> None:
    """Fed in pieces, the payload is range_encode's, byte for byte, while the tables fit the kept
    budget; past it (0 bytes, or only the first piece kept) it is the same words untrimmed, which
    decode to the same symbols."""
    rng = np.random.default_rng(2)
    freq = frequencies_from_logits(rng.normal(0, 2, (70, 40)))
    symbols = np.array([rng.choice(40, p=f / TOTAL) for f in freq])
    encoder = StreamEncoder(keep_bytes)
    for start, end in [(0, 20), (20, 21), (21, 70)]:
        encoder.encode(symbols[start:end], freq[start:end])
    payload, whole = encoder.finish(), range_encode(symbols, freq)
    if keep_bytes is None:
        assert payload == whole
    else:
        assert payload[: len(whole)] == whole and len(payload) % 4 == 0  # whole 32-bit words
    step = StepDecoder(payload)
    assert [step(f) for f in freq] == symbols.tolist()


# ---- bad files -----------------------------------------------------------------------------------


def test_errors_are_data_errors() -> None:
    assert issubclass(CodecError, DataError) and issubclass(CodecError, ValueError)


@pytest.mark.parametrize("name", ["static", "prior"])
def test_every_truncation_is_refused(coding: Coding, name: str) -> None:
    data = FILES[name]
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            decompress(coding, data[:cut])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a .vqk file"),
        (b"VQ\x06" + FILES["raw"][3:], "format version 6"),
        (b"VQ\x00" + FILES["raw"][3:], "version 0"),
        (FILES["raw"][:3] + b"\x07" + FILES["raw"][4:], "unknown entropy model id 7"),
        (FILES["raw"] + b"\0", "unexpected bytes"),
        (FILES["raw"][:10] + b"\xff\xff\xff\xff\x7f", "image count"),
        (FILES["raw"][:11] + write_varint(MAX_SIDE + 1) + bytes(8), "image 0 height"),
        (FILES["raw"][:11] + b"\x80\x00" + bytes(8), "minimally"),
        (FILES["raw"][:11] + b"\x10\x10\x09" + bytes(8), "unknown mode 9"),
        (FILES["raw"][:11] + b"\x10\x10\x81\x20\x20" + bytes(8), "unknown mode 129"),  # flag: version 2 only
        (b"VQ\x02" + FILES["raw"][3:11] + b"\x10\x10\x81\x00\x20" + bytes(8), "coded at 0x32"),
        (FILES["raw"][:11] + b"\x10\x10\x01\x7f" + bytes(8), "truncated: image 0 codes needs 127 bytes"),
    ],
)
def test_bad_files_get_one_clear_error(coding: Coding, data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decompress(coding, data)


def test_a_file_from_another_model_is_refused(coding: Coding) -> None:
    data = bytearray(FILES["static"])
    data[4] ^= 1  # the fingerprint's first byte
    with pytest.raises(CodecError, match="another model"):
        decompress(coding, bytes(data))


# ---- fuzzing -------------------------------------------------------------------------------------


def _mutate(data: bytes, edits: list[tuple[int, int, int]], cut: int) -> bytes:
    """Edits: (0, pos, mask) flips bits anywhere, (1, pos, byte) inserts, (2, pos, _) deletes, and
    (3, pos, mask) flips bits in the payloads only, so the file still parses and the decoders see garbage."""
    out = bytearray(data)
    start = parse(data).payload_offset
    for kind, pos, value in edits:
        i = pos % (len(out) + 1)
        if kind == 0 and out:
            out[i % len(out)] ^= value or 1
        elif kind == 1:
            out.insert(i, value)
        elif kind == 2 and out:
            del out[i % len(out)]
        elif kind == 3 and len(out) > start:
            out[start + pos % (len(out) - start)] ^= value or 1
    return bytes(out[: max(0, len(out) - cut)])


def check_decodes_or_codec_error(coding: Coding, data: bytes) -> None:
    try:
        images = decompress(coding, data, name="fuzz")
    except CodecError:
        return
    container = parse(data)
    assert len(images) == len(container.records)
    for image, record in zip(images, container.records, strict=True):
        assert image.dtype == np.uint8 and image.shape == (record.height, record.width, record.mode.channels)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(FILES)),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.integers(0, 3),
)
def test_fuzzed_files_decode_or_raise_codec_error(
    coding: Coding, name: str, edits: list[tuple[int, int, int]], cut: int
) -> None:
    check_decodes_or_codec_error(coding, _mutate(FILES[name], edits, cut))


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(FILES)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1),
)
def test_garbage_payloads_decode_or_raise_codec_error(
    coding: Coding, name: str, flips: list[tuple[int, int]]
) -> None:
    check_decodes_or_codec_error(coding, _mutate(FILES[name], [(3, pos, mask) for pos, mask in flips], 0))


def _reference_frequencies(logits: np.ndarray) -> np.ndarray:
    """docs/format.md's integer softmax, element by element in Python integers: the parity target."""
    with localcontext() as ctx:  # 40 digits, ties to even (Decimal's round)
        ctx.prec = 40
        whole = [round(Decimal(-a).exp() * (1 << 30)) for a in range(24)]
        frac = [round((Decimal(-b) / 4096).exp() * (1 << 30)) for b in range(4096)]
    out = []
    for row in np.asarray(logits, dtype=np.float64):
        q = [int(np.rint(v * 4096)) for v in row]
        top, k = max(q), len(q)
        w = [(whole[(top - v) >> 12] * frac[(top - v) & 4095]) >> 30 if top - v < 24 * 4096 else 0 for v in q]
        freq = [1 + x * ((1 << 20) - k) // sum(w) for x in w]
        freq[w.index(max(w))] += (1 << 20) - sum(freq)
        out.append(freq)
    return np.array(out, dtype=np.int64)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 300), st.integers(1, 6), st.floats(0.1, 12), st.integers(0, 2**32 - 1))
def test_logit_tables_match_the_documented_formula(k: int, n: int, spread: float, seed: int) -> None:
    """The vectorised tables (one tabulated weight per distance below the maximum) equal the formula
    of docs/format.md computed one logit at a time, including distances at and past 24 nats."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, spread, (n, k))
    logits[0, : min(k, 3)] = logits[0].max() - np.array([24.0, 24.0 - 2**-12, 24.0 + 2**-12])[: min(k, 3)]
    np.testing.assert_array_equal(frequencies_from_logits(logits), _reference_frequencies(logits))
