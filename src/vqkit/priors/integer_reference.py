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
    """``arrays``: IntegerPrior.arrays(); ``schedule``, ``radius``, ``num_classes`` and ``context``
    from its config."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        *,
        schedule: str,
        radius: int,
        num_classes: int,
        context: str = "window",
    ) -> None:
        self.a = {name: np.asarray(t, dtype=np.int64) for name, t in arrays.items()}
        self.schedule, self.num_classes, self.context = schedule, num_classes, context
        self.radius = radius if context == "window" else 1  # a conv context's taps are 3 x 3
        self.codebook_size = self.a["embed"].shape[0] - 1
        self.convs = sum(1 for name in self.a if name.startswith("conv.") and name.endswith(".weight"))
        self.hidden = sum(1 for name in self.a if name.startswith("hidden.") and name.endswith(".weight"))
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

    @staticmethod
    def _window_sum(values: np.ndarray, ys: np.ndarray, xs: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """sum over the offsets (dy, dx) of weight[:, dy + r, dx + r, :] @ values[:, y + dy, x + dx]:
        ``values`` (B, h, w, c) int64 with zeros standing for positions outside the grid (read here
        as out of range), positions ys, xs (n,), ``weight`` (out, k, k, c) -> (B, n, out) int64."""
        b, h, w, _ = values.shape
        r = weight.shape[1] // 2
        acc = np.zeros((b, len(ys), weight.shape[0]), dtype=np.int64)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                y, x = ys + dy, xs + dx
                inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
                v = values[:, np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)]  # (B, n, c)
                v = v * inside[None, :, None]  # outside the grid: zero padding
                acc += np.matmul(v, weight[:, dy + r, dx + r, :].T)
        return acc

    def step_hidden(self, known: np.ndarray, step: int, start_ids: np.ndarray) -> np.ndarray:
        """known (B, h, w), step, start_ids (B,) -> a_int (B, n_s, H) int64 (IntegerPrior.step_hidden)."""
        a, k_codes = self.a, self.codebook_size
        known = np.asarray(known, dtype=np.int64)
        b, h, w = known.shape
        steps = step_map(self.schedule, h, w)
        codes = np.where(steps[None] < step, known, k_codes)  # row K: not decoded yet
        emb = a["embed"][codes]  # (B, h, w, E)
        ids = np.asarray(start_ids, dtype=np.int64)
        bias = a["context.step_bias"][step][None, :] + a["context.class_bias"][ids]  # (B, out)
        ys, xs = np.nonzero(steps == step)  # raster order
        if self.context == "conv":  # the conv stack over every position, then the step's positions
            # (the torch path computes the last conv layer at the step's positions only; here all)
            every_y, every_x = np.divmod(np.arange(h * w), w)
            acc = self._window_sum(emb, every_y, every_x, a["context.weight"]) + bias[:, None, :]
            z = np.clip(self._requantize(acc, a["context.multiplier"], int(a["shifts"][0])), 0, 127)
            for j in range(self.convs):
                grid = z.reshape(b, h, w, -1)
                acc = self._window_sum(grid, every_y, every_x, a[f"conv.{j}.weight"]) + a[f"conv.{j}.bias"]
                acc = acc * a[f"conv.{j}.multiplier"] + z * a[f"conv.{j}.skip"]
                shift = int(a["shifts"][1 + j])
                z = np.clip(
                    np.floor_divide(
                        acc + (np.int64(1) << np.int64(shift - 1)), np.int64(1) << np.int64(shift)
                    ),
                    0,
                    127,
                )
            act = z.reshape(b, h, w, -1)[:, ys, xs]  # (B, n_s, C)
            first = 1 + self.convs
        else:
            acc = self._window_sum(emb, ys, xs, a["context.weight"]) + bias[:, None, :]
            act = np.clip(self._requantize(acc, a["context.multiplier"], int(a["shifts"][0])), 0, 127)
            first = 1
        for i in range(self.hidden):
            acc = np.matmul(act, a[f"hidden.{i}.weight"].T) + a[f"hidden.{i}.bias"]
            shift = int(a["shifts"][first + i])
            act = np.clip(self._requantize(acc, a[f"hidden.{i}.multiplier"], shift), 0, 127)
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
