"""Integer probability tables for the entropy coder, computed without machine-dependent floats.

Every table holds K positive integers summing to ``TOTAL = 2**PRECISION``. From model logits:
  1. q = rint(logit * 2**12)  (float64 scaling by a power of two and rint are exact IEEE operations);
  2. weight = exp(-(max q - q) / 2**12) in 30-bit fixed point, from two lookup tables built with
     Python's ``decimal`` (correctly rounded, identical everywhere), multiplied in int64;
  3. freq = 1 + floor(weight * (TOTAL - K) / sum(weight)), the remainder to the first largest weight.
So a bit flip in a float logit only matters when it moves q across a rounding boundary (docs/format.md).
"""

from __future__ import annotations

import functools
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np

PRECISION = 20
TOTAL = 1 << PRECISION
MAX_CODEBOOK = 1 << 16  # keeps every table entry >= 1 with room to spare
LOGIT_BITS = 12  # logits are rounded to multiples of 2**-12 nats
_FIXED = 30  # fixed-point bits of the exp tables
_NATS = 24  # weights of logits more than 24 nats below the maximum are 0 (their freq is then 1)


@functools.cache
def _exp_tables() -> tuple[np.ndarray, np.ndarray]:
    """round(2**30 * exp(-a)) for whole nats a, and round(2**30 * exp(-b / 2**12)) for b < 2**12."""
    with localcontext() as ctx:
        ctx.prec = 40
        scale = Decimal(1 << _FIXED)

        def fixed(x: Decimal) -> int:
            return int((x.exp() * scale).to_integral_value(rounding=ROUND_HALF_EVEN))

        whole = [fixed(Decimal(-a)) for a in range(_NATS)]
        frac = [fixed(Decimal(-b) / (1 << LOGIT_BITS)) for b in range(1 << LOGIT_BITS)]
    return np.array(whole, dtype=np.int64), np.array(frac, dtype=np.int64)


def check_codebook_size(codebook_size: int) -> None:
    if not 2 <= codebook_size <= MAX_CODEBOOK:
        raise ValueError(
            f"entropy coding supports codebooks of 2 to {MAX_CODEBOOK} codes, got {codebook_size}"
        )


def quantize_logits(logits: np.ndarray) -> np.ndarray:
    """(..., K) float logits -> int64 multiples of 2**-12 nats. Non-finite values raise ValueError."""
    x = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("the prior produced non-finite logits")
    q = np.rint(x * (1 << LOGIT_BITS))
    if np.abs(q).max(initial=0) >= 2.0**52:
        raise ValueError("the prior produced logits too large to quantize")
    return q.astype(np.int64)


@functools.cache
def _weight_table() -> np.ndarray:
    """The weight of every d = max(q) - q in [0, 24 * 2**12], tabulated: (E[d >> 12] * F[d & 4095]) >> 30
    below 24 nats and 0 at the end (where every larger d is clamped). One lookup per logit instead of
    two lookups, a product and a shift; the same integers (tests/test_codec_format.py)."""
    whole, frac = _exp_tables()
    d = np.arange(_NATS << LOGIT_BITS, dtype=np.int64)
    table = (whole[d >> LOGIT_BITS] * frac[d & ((1 << LOGIT_BITS) - 1)]) >> _FIXED
    return np.append(table, np.int64(0))  # (24 * 4096 + 1,): 768 KiB, reused by every call


def frequencies_from_logits(logits: np.ndarray) -> np.ndarray:
    """(n, K) float logits -> (n, K) int64 frequency tables, each row positive and summing to TOTAL:
    `quantize_logits`, then `frequencies_from_int_logits`."""
    return frequencies_from_int_logits(quantize_logits(logits))


def frequencies_from_int_logits(q: np.ndarray) -> np.ndarray:
    """(n, K) int64 logits in units of 2**-12 nats (an integer prior's output, or `quantize_logits`)
    -> (n, K) int64 frequency tables, each row positive and summing to TOTAL. Integer maths only."""
    q = np.asarray(q)
    if q.ndim != 2 or q.dtype != np.int64:
        raise ValueError(f"integer logits must be (n, K) int64, got {q.dtype} {q.shape}")
    k = q.shape[-1]
    check_codebook_size(k)
    table = _weight_table()
    if len(q) and (int(q.max()) >= 1 << 61 or int(q.min()) <= -(1 << 61)):
        raise ValueError("integer logits must lie in (-2**61, 2**61)")  # so max - q cannot overflow
    d = q.max(axis=-1, keepdims=True) - q  # >= 0, in 2**-12 nats below the row's maximum
    np.minimum(d, len(table) - 1, out=d)  # 24 nats or more below: weight 0
    weight = table[d]  # (n, K), <= 2**30; the maximum has weight 2**30
    return _scale_to_total(weight)


def frequencies_from_counts(counts: np.ndarray) -> np.ndarray:
    """(K,) code counts -> (K,) int64 table after add-one (Laplace) smoothing; exact integer maths."""
    c = [int(v) + 1 for v in np.asarray(counts).reshape(-1)]
    check_codebook_size(len(c))
    if min(c) < 1:
        raise ValueError("code counts must be >= 0")
    total, room = sum(c), TOTAL - len(c)
    freq = [1 + v * room // total for v in c]  # Python ints: no overflow for any count
    freq[max(range(len(c)), key=lambda i: (c[i], -i))] += TOTAL - sum(freq)
    return np.array(freq, dtype=np.int64)


def _scale_to_total(weight: np.ndarray) -> np.ndarray:
    k = weight.shape[-1]
    total = weight.sum(axis=-1, keepdims=True)  # >= 2**30 because the row maximum has weight 2**30
    freq = 1 + (weight * (TOTAL - k)) // total  # products < 2**51: exact in int64
    rows = np.arange(freq.shape[0])
    freq[rows, weight.argmax(axis=-1)] += TOTAL - freq.sum(axis=-1)  # argmax: first of the largest
    return freq


def code_bits(freq: np.ndarray, symbols: np.ndarray) -> float:
    """-log2 p summed over ``symbols`` under integer tables ((K,) shared, or (n, K) per symbol)."""
    s = np.asarray(symbols, dtype=np.int64).reshape(-1)
    f = freq[s] if freq.ndim == 1 else freq[np.arange(len(s)), s]
    return float(np.sum(PRECISION - np.log2(f.astype(np.float64))))
