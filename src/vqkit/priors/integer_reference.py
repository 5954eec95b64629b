"""A second, independent implementation of `IntegerPrior`'s inference, in NumPy int64 only.

The tests hold vqkit.priors.integer to it bit for bit. It shares nothing with the torch path but the
stored integers, the schedule (vqkit.priors.grouped.step_map) and the format's MASK_GAP: no float
anywhere, no torch arithmetic, the context layer written as a sum over the k x k window offsets of
(embedding rows @ weight slice) instead of one gather and matmul, the lo part's invalid codes found
from hi * K_lo + lo >= K directly, and the requantization spelled out in Python-int semantics on int64
arrays. NumPy's integer matmul is exact (no BLAS), so this is slow but plainly right: a reference,
not a fast path.
"""

from __future__ import annotations

import numpy as np

from vqkit.priors.grouped import schedule_steps, step_map
from vqkit.priors.integer import MASK_GAP


class ReferencePrior:
    """``arrays``: IntegerPrior.arrays(); ``schedule``, ``radius``, ``num_classes`` from its config."""

    def __init__(
        self, arrays: dict[str, np.ndarray], *, schedule: str, radius: int, num_classes: int
    ) -> None:
        self.a = {name: np.asarray(t, dtype=np.int64) for name, t in arrays.items()}
        self.schedule, self.radius, self.num_classes = schedule, radius, num_classes
        self.codebook_size = self.a["embed"].shape[0] - 1
        self.layers = len(self.a["shifts"]) - 2  # context, L - 1 hidden layers, head, head_lo
        self.k_hi = self.a["head.weight"].shape[0]
        self.k_lo = self.a["head_lo.weight"].shape[0]
        self.steps = schedule_steps(schedule)
        self.order = self.a.get("code_order", np.arange(self.codebook_size, dtype=np.int64))

    def split(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """codes (...) -> (hi, lo) (...) of their ranks ``code_order[codes]`` (identity when absent)."""
        return np.divmod(self.order[np.asarray(codes, dtype=np.int64)], self.k_lo)

    @staticmethod
    def _requantize(acc: np.ndarray, mult: np.ndarray, shift: int) -> np.ndarray:
        """round-half-up(acc * M / 2^S) with floor division, as the format defines it."""
        return np.floor_divide(
            acc * mult + (np.int64(1) << np.int64(shift - 1)), np.int64(1) << np.int64(shift)
        )

    def step_hidden(self, known: np.ndarray, step: int, start_ids: np.ndarray) -> np.ndarray:
        """known (B, h, w), step, start_ids (B,) -> a_int (B, n_s, H) int64 (IntegerPrior.step_hidden)."""
        a, r, k_codes = self.a, self.radius, self.codebook_size
        known = np.asarray(known, dtype=np.int64)
        b, h, w = known.shape
        steps = step_map(self.schedule, h, w)
        ys, xs = np.nonzero(steps == step)  # raster order
        n = len(ys)
        weight = a["context.weight"]  # (H, k, k, E)
        acc = np.zeros((b, n, weight.shape[0]), dtype=np.int64)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                y, x = ys + dy, xs + dx
                inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
                yc, xc = np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)
                codes = known[:, yc, xc]  # (B, n)
                decoded = steps[yc, xc] < step
                codes = np.where(decoded[None, :], codes, k_codes)  # row K: not decoded yet
                emb = a["embed"][codes]  # (B, n, E)
                emb = emb * inside[None, :, None]  # outside the grid: zero padding
                w_off = weight[:, dy + r, dx + r, :]  # (H, E)
                acc += np.matmul(emb, w_off.T)
        ids = np.asarray(start_ids, dtype=np.int64)
        acc += (a["context.step_bias"][step][None, :] + a["context.class_bias"][ids])[:, None, :]
        act = np.clip(self._requantize(acc, a["context.multiplier"], int(a["shifts"][0])), 0, 127)
        for i in range(self.layers - 1):
            acc = np.matmul(act, a[f"hidden.{i}.weight"].T) + a[f"hidden.{i}.bias"]
            act = np.clip(self._requantize(acc, a[f"hidden.{i}.multiplier"], int(a["shifts"][i + 1])), 0, 127)
        return act

    def hi_logits(self, a_int: np.ndarray) -> np.ndarray:
        """a_int (..., H) -> q_hi (..., K_hi) int64 (IntegerPrior.hi_logits)."""
        a = self.a
        acc = np.matmul(np.asarray(a_int, dtype=np.int64), a["head.weight"].T) + a["head.bias"]
        return self._requantize(acc, a["head.multiplier"], int(a["shifts"][-2]))

    def lo_logits(self, a_int: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """a_int (..., H), hi (...) -> q_lo (..., K_lo) int64 (IntegerPrior.lo_logits)."""
        a = self.a
        hi = np.asarray(hi, dtype=np.int64)
        b = np.clip(np.asarray(a_int, dtype=np.int64) + a["hi_embed"][hi], 0, 127)
        acc = np.matmul(b, a["head_lo.weight"].T) + a["head_lo.bias"]
        q = self._requantize(acc, a["head_lo.multiplier"], int(a["shifts"][-1]))
        invalid = hi[..., None] * self.k_lo + np.arange(self.k_lo) >= self.codebook_size  # (..., K_lo)
        if invalid.any():
            top = np.where(invalid, np.iinfo(np.int64).min, q).max(axis=-1, keepdims=True)
            q = np.where(invalid, top - MASK_GAP, q)
        return q
