"""Entropy coding of code sequences with constriction's range coder, and the raw fixed-width packing.

A payload is the range coder's 32-bit words written big-endian, with trailing bytes dropped while the
payload still decodes to the same symbols when the decoder pads it with 0xFF bytes (up to a whole
word, then two more words). The encoder checks that by decoding, so the trimmed payload is decodable
by construction; trimming saves about 13 of the 16 bits that sealing the coder costs.

Probabilities reach constriction as float64 ``freq / 2**20``: exact binary fractions, which its
``Categorical(perfect=False)`` model turns into its own fixed-point table by deterministic arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import constriction
import numpy as np

from vqkit.codec.container import CodecError
from vqkit.codec.tables import TOTAL

_PAD = b"\xff"


def _model(freq: np.ndarray) -> tuple[object, tuple[np.ndarray, ...]]:
    """A constriction model and the extra arguments for encode/decode: one table or one per symbol."""
    probabilities = freq.astype(np.float64) / TOTAL
    if freq.ndim == 1:
        return constriction.stream.model.Categorical(probabilities, perfect=False), ()
    return constriction.stream.model.Categorical(perfect=False), (probabilities,)


def _words(payload: bytes) -> np.ndarray:
    padded = payload + _PAD * ((-len(payload)) % 4 + 8)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)


def _trimmed(payload: bytes, model: object, extra: tuple[np.ndarray, ...], symbols: np.ndarray) -> bytes:
    """``payload`` without the trailing bytes it can lose and still decode to ``symbols``."""

    def decodes(candidate: bytes) -> bool:
        return bool(np.array_equal(_decode(candidate, model, extra, len(symbols)), symbols))

    return _trim(payload, decodes)


def _trim(payload: bytes, decodes: Callable[[bytes], bool]) -> bytes:
    """Drop trailing bytes while ``decodes(shorter payload)`` holds; a decoding error means it does not
    (constriction signals data invalid for the model with AssertionError)."""

    def ok(candidate: bytes) -> bool:
        try:
            return decodes(candidate)
        except Exception:
            return False

    while payload and ok(payload[:-1]):
        payload = payload[:-1]
    return payload


def range_encode(symbols: np.ndarray, freq: np.ndarray) -> bytes:
    """Symbols (n,) in [0, K) under a shared (K,) table or per-symbol (n, K) tables -> payload bytes."""
    s = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
    model, extra = _model(freq)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(s, model, *extra)
    return _trimmed(encoder.get_compressed().astype(">u4").tobytes(), model, extra, s)


class StreamEncoder:
    """`range_encode` with per-symbol tables fed in pieces (an image's tiles chunk by chunk), so a big
    image's tables need not all sit in memory. The payload is trimmed like `range_encode`'s (and then
    byte-identical to it) while the tables fed stay under ``keep_bytes``; past that they are dropped
    and the payload keeps its few trailing bytes, which decode just as well."""

    KEEP_BYTES = 1 << 27  # 128 MiB of float64 tables: a 768x512 photo at K = 512 needs 96 MiB

    def __init__(self, keep_bytes: int | None = None) -> None:
        self._encoder = constriction.stream.queue.RangeEncoder()
        self._family = constriction.stream.model.Categorical(perfect=False)
        self._keep_bytes = self.KEEP_BYTES if keep_bytes is None else keep_bytes
        self._kept: list[tuple[np.ndarray, np.ndarray]] | None = []
        self._size = 0

    def encode(self, symbols: np.ndarray, freq: np.ndarray) -> None:
        """Symbols (n,) under their (n, K) integer tables, after everything encoded so far."""
        s = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
        probabilities = freq.astype(np.float64) / TOTAL
        self._encoder.encode(s, self._family, probabilities)
        if self._kept is not None:
            self._size += probabilities.nbytes
            if self._size <= self._keep_bytes:
                self._kept.append((s, probabilities))
            else:
                self._kept = None  # too big to keep: the payload stays untrimmed

    def finish(self) -> bytes:
        payload: bytes = self._encoder.get_compressed().astype(">u4").tobytes()
        if not self._kept:
            return payload
        kept = self._kept

        def decodes(candidate: bytes) -> bool:  # piece by piece: tables of different widths may follow
            decoder = constriction.stream.queue.RangeDecoder(_words(candidate))
            return all(
                np.array_equal(np.asarray(decoder.decode(self._family, p), dtype=np.int64), s)
                for s, p in kept
            )

        return _trim(payload, decodes)


def _decode(payload: bytes, model: object, extra: tuple[np.ndarray, ...], n: int) -> np.ndarray:
    decoder = constriction.stream.queue.RangeDecoder(_words(payload))
    out = decoder.decode(model, *extra) if extra else decoder.decode(model, n)
    return np.asarray(out, dtype=np.int64)


def range_decode(payload: bytes, freq: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`range_encode` for a shared (K,) table: (n,) int64 symbols."""
    model, _ = _model(freq)
    try:
        return _decode(payload, model, (), n)
    except Exception as e:  # constriction reports invalid data with its own exception types
        raise CodecError(f"corrupt codes payload ({e})") from e


class StepDecoder:
    """Decodes one symbol at a time, each with its own (K,) table (autoregressive decoding), or a
    step's symbols at once with their (n, K) tables (``many``)."""

    def __init__(self, payload: bytes) -> None:
        self._decoder = constriction.stream.queue.RangeDecoder(_words(payload))
        self._family = constriction.stream.model.Categorical(perfect=False)

    def __call__(self, freq: np.ndarray) -> int:
        probabilities = (freq.astype(np.float64) / TOTAL)[None, :]
        try:
            return int(self._decoder.decode(self._family, probabilities)[0])
        except Exception as e:
            raise CodecError(f"corrupt codes payload ({e})") from e

    def many(self, freq: np.ndarray) -> np.ndarray:
        """The next n symbols, each under its row of ``freq`` (n, K) -> (n,) int64."""
        probabilities = freq.astype(np.float64) / TOTAL
        try:
            return np.asarray(self._decoder.decode(self._family, probabilities), dtype=np.int64)
        except Exception as e:
            raise CodecError(f"corrupt codes payload ({e})") from e


def raw_bits(codebook_size: int) -> int:
    return max(1, math.ceil(math.log2(codebook_size)))


def raw_encode(symbols: np.ndarray, codebook_size: int) -> bytes:
    """Fixed-width packing: each code in ceil(log2 K) bits, most significant bit first."""
    bits = raw_bits(codebook_size)
    s = np.asarray(symbols, dtype=np.int64).reshape(-1)
    planes = (s[:, None] >> np.arange(bits - 1, -1, -1)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1)).tobytes()


def raw_decode(payload: bytes, codebook_size: int, n: int) -> np.ndarray:
    bits = raw_bits(codebook_size)
    if len(payload) != (n * bits + 7) // 8:
        raise CodecError(f"corrupt raw codes: {len(payload)} bytes for {n} codes of {bits} bits")
    planes = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))[: n * bits].reshape(n, bits)
    symbols = planes.astype(np.int64) @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
    if symbols.size and symbols.max() >= codebook_size:
        raise CodecError(f"corrupt raw codes: code {int(symbols.max())} >= codebook size {codebook_size}")
    return symbols


def range_encode_stages(stages: list[np.ndarray], tables: np.ndarray) -> bytes:
    """Several symbol sequences into one payload, sequence s under its shared (K,) table ``tables[s]``
    ((n, K) for n sequences), one after another on one range coder. One sequence gives exactly the
    bytes of `range_encode`."""
    seqs = [np.ascontiguousarray(s, dtype=np.int32).reshape(-1) for s in stages]
    models = [_model(tables[i])[0] for i in range(len(seqs))]
    encoder = constriction.stream.queue.RangeEncoder()
    for s, model in zip(seqs, models, strict=True):
        encoder.encode(s, model)
    payload: bytes = encoder.get_compressed().astype(">u4").tobytes()
    lengths = [len(s) for s in seqs]

    def decodes(candidate: bytes) -> bool:
        try:
            got = _decode_stages(candidate, models, lengths)
        except Exception:  # constriction signals data invalid for the model with AssertionError
            return False
        return all(np.array_equal(g, s) for g, s in zip(got, seqs, strict=True))

    while payload and decodes(payload[:-1]):  # trimmed as `range_encode` trims
        payload = payload[:-1]
    return payload


def _decode_stages(payload: bytes, models: list[object], lengths: list[int]) -> list[np.ndarray]:
    decoder = constriction.stream.queue.RangeDecoder(_words(payload))
    return [np.asarray(decoder.decode(m, n), dtype=np.int64) for m, n in zip(models, lengths, strict=True)]


def range_decode_stages(payload: bytes, tables: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`range_encode_stages` for sequences of n symbols each, one per row of
    ``tables`` (S', K): (S', n) int64."""
    models = [_model(t)[0] for t in tables]
    try:
        return np.stack(_decode_stages(payload, models, [n] * len(models)))
    except Exception as e:  # constriction reports invalid data with its own exception types
        raise CodecError(f"corrupt codes payload ({e})") from e
