"""`IntegerPrior`: a trained `GroupedPrior` quantized to an integer network whose logits are exact.

The entropy coder's probability tables must be identical on every machine, or a file written on one
cannot be decoded on another. Float inference cannot promise that (summation order, FMA, SIMD width,
thread count and GPU kernels all change the last bits). This network computes its logits with
integers only, in the manner of Ballé et al. 2019, "Integer networks for data compression": every
operation below is exact, so its result is a pure function of the stored integers and the inputs.

Shapes (K codes, K_hi x K_lo its two parts (vqkit.priors.grouped.split_sizes), E = embed_dim,
H = width, r = radius, k = 2r + 1, G steps, C classes, L = layers; per position t of step s, label l):
  1. context: the k x k window of code ids around t, each one of
       a code decoded in an earlier step  -> its row of ``embed`` (K + 1, E), |v| <= 127,
       a code not decoded yet             -> row K of ``embed`` (the "unknown" embedding),
       a position outside the grid        -> zeros (the float model's zero padding);
     flattened to x (k*k*E,) in (dy, dx, e) order, then
       acc = W0 x + step_bias[s] + class_bias[l]      W0 = ``context.weight`` (H, k, k, E), |w| <= 127
  2. requantization to [0, 127]:  a = clamp((acc * M + 2^(S-1)) >> S, 0, 127)  per output channel c,
     M = ``*.multiplier`` (H,) in [0, 2^16), S = ``shifts[layer]`` in [1, 48];
  3. L - 1 times:  acc = W a + bias (W (H, H), |w| <= 127), requantized as in 2. The last result is
     a_int (H,) in [0, 127] (`step_hidden`);
  4. hi part (`hi_logits`):  acc = W_hi a_int + bias (W_hi = ``head.weight`` (K_hi, H)),
     q_hi = (acc * M + 2^(S-1)) >> S (K_hi,) without clamping: logits in units of 2^-12 nats
     (vqkit.codec.tables.LOGIT_BITS), S >= 2;
  5. lo part given hi (`lo_logits`):  b = clamp(a_int + U[hi], 0, 127) with U = ``hi_embed``
     (K_hi, H), the float model's hi embedding in a_int's units, |U| <= 127 (a larger |U| would be
     clamped to the same b anyway: a_int + U lies in [0, 127] only for U in [-127, 127]); then
     acc = W_lo b + bias (W_lo = ``head_lo.weight`` (K_lo, H)) and q_lo (K_lo,) as in 4. A lo value
     whose code hi * K_lo + lo is >= K (only when K_lo does not divide K, only for hi = K_hi - 1) gets
     q_lo = max(q_lo of the valid lo values) - MASK_GAP, 32 nats below the row's largest logit: its
     integer table weight is 0, so its frequency is the minimum, 1. A valid encoder never codes such
     a value; a decoder that decodes one has a damaged stream (the codec refuses it).
  With the "conv" context (C = channels, conv_layers = 1 + J), steps 1-3 become, over the whole grid:
  1'. x (3*3*E,) per position, the 3 x 3 neighbourhood of embeddings as in 1 (zeros outside the grid):
       acc = W0 x + step_bias[s] + class_bias[l], requantized to z_0 (C,) in [0, 127] as in 2;
  2'. for j = 0..J-1 (``conv.j``): y = the 3 x 3 neighbourhood of z_j (zeros outside the grid, i.e.
       the float model's zero padding, as 0 is the integer of 0.0), acc = W_j y + bias (W_j (C, 3, 3, C));
       z_{j+1} = clamp((acc * M + z_j * N + 2^(S-1)) >> S, 0, 127) per channel c: the residual
       z_j + conv(z_j) with the skip term's own multiplier N = ``conv.j.skip`` (C,) in [0, 2^32);
  3'. at the step's positions: ``layers`` linear layers hidden.0 (H, C), hidden.1.. (H, H), each
       requantized as in 2; the last result is a_int (H,).
  So p(x) = p(hi) p(lo | hi) with hi * K_lo + lo = order[x], the rank of code x (the float model's
  ``code_order``, tensor ``code_order`` (K,) int64, a permutation; absent means the identity), as in
  the float model's two-part head, and a coder builds K_hi + K_lo table entries per code instead of
  K. `split` and `join` map codes to (hi, lo) and back.

Why the result is exact and machine-independent:
  * every product in a matmul is an integer of magnitude <= 127 * 127 (activations a_int and b in
    [0, 127], weights and embeddings in [-127, 127]), and every partial sum of the fan_in products is
    bounded by fan_in * 127 * 127. float32 holds every integer below 2^24 exactly, so when
    fan_in * 127 * 127 < 2^24 (fan_in <= 1040: the context layer of radius 3 and E = 16 has fan_in
    784, a hidden layer and both heads of width 256 have 256) a float32 matmul makes no rounding
    error at all, whatever the order of the sums, blocking, FMA contraction or vector width: the
    result is the exact integer sum (a conv layer of C = 64 has fan_in 576). Larger fan_in uses
    float64 (exact below 2^53).
    ``torch._int_mm`` (int8 x int8 -> int32, exact while fan_in * 127 * 127 < 2^31) gives the same
    integers and is 2-4x faster than the float32 GEMM on the CPU, where ``matmul`` = "auto" uses it.
    On CUDA "auto" takes the float path, in float64: float32 matmuls there may run in TF32 (inputs
    rounded to 10 bits), and cuBLASLt's int8 GEMM behind ``_int_mm`` has returned wrong results on
    some CUDA versions (pytorch issue 107671); "int_mm" asks for it explicitly (m > 16, k and n
    multiples of 8);
  * biases, multiplications by M and the shift run in int64: |acc| < 2^46 and M < 2^16 bound every
    product below 2^62 (checked when the tensors are built and on load; a residual's z * N adds less
    than 2^39), and ``>>`` of an int64 is an arithmetic shift, i.e. floor division by 2^S, the same
    everywhere. Adding 2^(S-1) first rounds half up. The heads' S >= 2 keeps |q| <= 2^60 + 1, so
    even a masked q_lo stays inside the (-2^61, 2^61) that vqkit.codec.tables accepts. A layer
    before the heads whose stored integers bound every partial value of its requantization below
    2^31 (`requant_bounds`: (127 * sum|W_c| + |bias_c|) * M_c + 2^(S-1) + 127 * N_c over its
    channels c) runs it in int32 instead: the same integers, as no value can overflow, with half the
    bytes to move (the export picks such multipliers where they cost no precision worth having,
    integer_export.NARROW_MIN_BITS);
  * the addition a_int + U[hi], gathers, clamps, maxima and comparisons are exact by nature, and the
    inputs of `hi_logits` / `lo_logits` are checked to lie in [0, 127] and [0, K_hi).
So no floating-point rounding happens anywhere, and the tables (vqkit.codec.tables, integer too) are
bit-identical for any batch size, thread count, CPU capability, BLAS or device.

The integers come from a trained GroupedPrior by post-training quantization:
vqkit.priors.integer_export.export_integer.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from torch import Tensor

from vqkit.config import ConfigError
from vqkit.priors.config import PriorConfig, prior_config_from_dict, prior_config_to_dict
from vqkit.priors.grouped import (
    schedule_steps,
    split_sizes,
    step_geometry,
    step_map,
    window_codes,
)
from vqkit.runs import RunError, atomic_write

INTEGER_FORMAT = "vqkit-integer-prior"
INTEGER_FORMAT_VERSION = 4  # 4: the "conv" context (written for conv priors only); 3: a code order;
# 2: the two-part head in index order (still written for the identity order, so those files and their
# digests stay as they were); 1, a single K-way head, was never shipped
ORDER_SINCE = 3
CONV_SINCE = 4
LOGIT_BITS = 12  # q is in units of 2^-12 nats; equals vqkit.codec.tables.LOGIT_BITS (a test checks)
QMAX = 127  # |embedding|, |weight|, |hi_embed| and activations are <= QMAX
MULTIPLIER_BITS = 16  # M < 2^16
SKIP_BITS = 32  # a residual's N < 2^32: z * N < 2^39, so a residual adds at most that to acc * M
MAX_SHIFT = 48
MIN_HEAD_SHIFT = 2  # the heads' S >= 2: |q| <= 2^60 + 1 (module docstring)
ACC_BITS = 46  # |acc| < 2^46, so |acc * M| < 2^62 and adding 2^(S-1) <= 2^47 stays in int64
BIAS_LIMIT = 1 << 40  # |bias| in accumulator units; with fan_in * 127^2 << 2^45 keeps |acc| < 2^46
MASK_GAP = 32 << LOGIT_BITS  # masked lo values: 32 nats below the row's largest logit (tables: weight 0)
FLOAT32_EXACT = 1 << 24  # float32 represents every integer of magnitude <= 2^24
INT32_EXACT = (1 << 31) - 1
MATMULS = ("auto", "float", "int_mm")
REQUANTS = ("auto", "int64")


def conv_count(config: PriorConfig) -> int:
    """J, the residual conv layers after the first (0 for the "window" context)."""
    return config.conv_layers - 1 if config.context == "conv" else 0


def hidden_count(config: PriorConfig) -> int:
    """The linear layers between the context and the heads: layers - 1 ("window"), layers ("conv")."""
    return config.layers if config.context == "conv" else config.layers - 1


def layer_names(config: PriorConfig) -> list[str]:
    """The matmul layers in order: context, conv.0 .. conv.{J-1} ("conv" context only), hidden.0 ..,
    head (hi part), head_lo. Every layer but the two heads ends in a requantization to [0, 127]."""
    convs = [f"conv.{j}" for j in range(conv_count(config))]
    hidden = [f"hidden.{i}" for i in range(hidden_count(config))]
    return ["context", *convs, *hidden, "head", "head_lo"]


def layer_shapes(config: PriorConfig) -> list[tuple[int, int]]:
    """(out, fan_in) of each layer of ``layer_names``."""
    c = config
    k_hi, k_lo = split_sizes(c.codebook_size)
    if c.context == "conv":
        chans = c.channels
        shapes = [(chans, 9 * c.embed_dim)] + [(chans, 9 * chans)] * conv_count(c)
        shapes += [(c.width, chans)] + [(c.width, c.width)] * (hidden_count(c) - 1)
    else:
        k = 2 * c.radius + 1
        shapes = [(c.width, k * k * c.embed_dim)] + [(c.width, c.width)] * hidden_count(c)
    return [*shapes, (k_hi, c.width), (k_lo, c.width)]


def expected_shapes(config: PriorConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, stored dtype) of every tensor of an integer prior of ``config``."""
    c = config
    names, sizes = layer_names(c), layer_shapes(c)
    k_hi, _ = split_sizes(c.codebook_size)
    first = sizes[0][0]  # H (window) or C (conv)
    side = 2 * c.radius + 1 if c.context == "window" else 3
    shapes: dict[str, tuple[tuple[int, ...], str]] = {
        "embed": ((c.codebook_size + 1, c.embed_dim), "int8"),
        "context.weight": ((first, side, side, c.embed_dim), "int8"),
        "context.step_bias": ((schedule_steps(c.schedule), first), "int64"),
        "context.class_bias": ((c.num_classes + 1, first), "int64"),
        "context.multiplier": ((first,), "int64"),
        "hi_embed": ((k_hi, c.width), "int8"),
        "shifts": ((len(names),), "int64"),
    }
    for name, (out, fan_in) in zip(names[1:], sizes[1:], strict=True):
        conv = name.startswith("conv.")
        shapes[f"{name}.weight"] = ((out, 3, 3, out) if conv else (out, fan_in), "int8")
        shapes[f"{name}.bias"] = ((out,), "int64")
        shapes[f"{name}.multiplier"] = ((out,), "int64")
        if conv:
            shapes[f"{name}.skip"] = ((out,), "int64")  # the residual's multiplier N
    return shapes


def check_tensors(config: PriorConfig, tensors: dict[str, np.ndarray]) -> None:
    """ValueError unless ``tensors`` are exactly the integer prior of ``config``: names, dtypes,
    shapes and every value range the exactness argument (module docstring) relies on. The tensor
    ``code_order`` is optional: when present it is a permutation of 0..K-1 other than the identity
    (the identity is stored as its absence, one canonical form per prior)."""
    if config.kind != "grouped":
        raise ValueError(f"an integer prior needs a grouped prior, got kind {config.kind!r}")
    want = expected_shapes(config)
    if "code_order" in tensors:
        order = tensors["code_order"]
        k = config.codebook_size
        if order.dtype != np.int64 or order.shape != (k,):
            raise ValueError(
                f"integer prior tensor code_order: expected int64 ({k},), got {order.dtype} {order.shape}"
            )
        if not np.array_equal(np.sort(order), np.arange(k)):
            raise ValueError(f"integer prior tensor code_order: must be a permutation of 0..{k - 1}")
        if np.array_equal(order, np.arange(k)):
            raise ValueError("integer prior tensor code_order: the identity is stored as no tensor")
        want = {**want, "code_order": ((k,), "int64")}
    if set(tensors) != set(want):
        missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
        raise ValueError(f"integer prior tensors: missing {missing}, unexpected {extra}")
    for name, (shape, dtype) in want.items():
        t = tensors[name]
        if t.dtype != np.dtype(dtype) or t.shape != shape:
            raise ValueError(
                f"integer prior tensor {name}: expected {dtype} {shape}, got {t.dtype} {t.shape}"
            )

    def within(name: str, lo: int, hi: int) -> None:
        t = tensors[name]
        if t.size and (int(t.min()) < lo or int(t.max()) > hi):
            raise ValueError(f"integer prior tensor {name}: values must lie in [{lo}, {hi}]")

    within("embed", -QMAX, QMAX)
    within("hi_embed", -QMAX, QMAX)
    for j in range(conv_count(config)):
        within(f"conv.{j}.skip", 0, (1 << SKIP_BITS) - 1)
    within("shifts", 1, MAX_SHIFT)
    shifts = tensors["shifts"]
    if int(shifts[-2:].min()) < MIN_HEAD_SHIFT:
        raise ValueError(
            f"integer prior heads: shifts must be >= {MIN_HEAD_SHIFT}, got {shifts[-2:].tolist()}"
        )
    bias_max = int(np.abs(tensors["context.step_bias"]).max(initial=0))
    bias_max += int(np.abs(tensors["context.class_bias"]).max(initial=0))
    if bias_max >= BIAS_LIMIT:
        raise ValueError(f"integer prior context biases: |step + class bias| must be < 2^40, got {bias_max}")
    for name, (_out, fan_in) in zip(layer_names(config), layer_shapes(config), strict=True):
        within(f"{name}.weight", -QMAX, QMAX)
        within(f"{name}.multiplier", 0, (1 << MULTIPLIER_BITS) - 1)
        if name != "context":
            within(f"{name}.bias", -BIAS_LIMIT + 1, BIAS_LIMIT - 1)
        # |acc| <= fan_in * 127^2 + |bias| < 2^46 (then |acc * M| < 2^62); never fails for real sizes
        if fan_in * QMAX * QMAX + 2 * BIAS_LIMIT >= 1 << ACC_BITS:
            raise ValueError(f"integer prior layer {name}: fan-in too large for exact accumulation")


def requant_bounds(config: PriorConfig, tensors: dict[str, np.ndarray]) -> list[int]:
    """`requant_bound` of each layer before the heads, in ``layer_names`` order."""
    shifts = [int(v) for v in tensors["shifts"]]
    return [requant_bound(tensors, name, shifts[i]) for i, name in enumerate(layer_names(config)[:-2])]


def requant_bound(tensors: dict[str, np.ndarray], name: str, shift: int) -> int:
    """The largest magnitude any partial value of layer ``name``'s requantization can take at shift
    ``shift``: max over channels c of (127 * sum|W_c| + |bias_c|) * M_c + 2^(S-1) + 127 * N_c (the
    context layer's bias: its largest step bias plus its largest class bias; N_c: a residual conv
    layer's skip multiplier, else 0). Inputs and embeddings lie in [-127, 127] and z in [0, 127], so
    |acc| <= 127 * sum|W_c| and every sum the requantization forms, in any order of its terms, stays
    within the bound. Python ints: no overflow here."""
    w = tensors[f"{name}.weight"]
    w_sum = np.abs(w.reshape(len(w), -1).astype(np.int64)).sum(1)
    if name == "context":
        bias = np.abs(tensors["context.step_bias"]).max(0) + np.abs(tensors["context.class_bias"]).max(0)
    else:
        bias = np.abs(tensors[f"{name}.bias"])
    skip = tensors.get(f"{name}.skip", np.zeros(len(w), dtype=np.int64))
    mult = tensors[f"{name}.multiplier"]
    worst = max(
        (QMAX * int(a) + int(b)) * int(m) + QMAX * int(n)
        for a, b, m, n in zip(w_sum, bias, mult, skip, strict=True)
    )
    return worst + (1 << (shift - 1))


class IntegerPrior:
    """The integer network of a grouped prior: `step_hidden` gives the requantized features a_int of a
    step's positions, `hi_logits` and `lo_logits` the int64 logits of a code's two parts in units of
    2^-12 nats, bit-identical on every machine (module docstring).

    ``tensors``: name -> integer numpy array (``expected_shapes``), checked by `check_tensors`.
    ``matmul``: "auto" (``torch._int_mm`` where it applies, else float), "float" or "int_mm"; every
    choice gives the same integers. ``requant``: "auto" (int32 requantization in the layers whose
    `requant_bounds` are below 2^31, else int64) or "int64" (everywhere); both give the same
    integers. ``info``: free JSON-ready notes saved with the file (how it was calibrated); not part
    of the digest."""

    def __init__(
        self,
        config: PriorConfig,
        tensors: dict[str, np.ndarray],
        *,
        device: str | torch.device = "cpu",
        matmul: str = "auto",
        requant: str = "auto",
        info: dict[str, Any] | None = None,
    ) -> None:
        check_tensors(config, tensors)
        if matmul not in MATMULS:
            raise ValueError(f"matmul must be one of {', '.join(MATMULS)}, got {matmul!r}")
        if requant not in REQUANTS:
            raise ValueError(f"requant must be one of {', '.join(REQUANTS)}, got {requant!r}")
        self.requant = requant
        self._config = config
        self._arrays = {name: np.array(t, copy=True) for name, t in tensors.items()}
        self.info = dict(info or {})
        self.device = torch.device(device)
        self.matmul = matmul
        self._steps = schedule_steps(config.schedule)
        self._k_hi, self._k_lo = split_sizes(config.codebook_size)
        self._build_device_tensors()

    def _build_device_tensors(self) -> None:
        a, dev, c = self._arrays, self.device, self._config
        zero = np.zeros((1, c.embed_dim), dtype=np.int8)  # row K + 1: outside the grid (zero padding)
        embed = np.concatenate([a["embed"], zero])
        self._embed8 = torch.from_numpy(embed).to(dev)
        names = layer_names(c)
        self._head = len(names) - 2  # index of the hi head; head_lo follows
        self._convs = conv_count(c)
        # (fan_in, out) each: a conv's (out, 3, 3, in) kernel flattened in (dy, dx, in) order
        self._weights8 = [
            torch.from_numpy(np.ascontiguousarray(a[f"{n}.weight"].reshape(len(a[f"{n}.weight"]), -1).T)).to(
                dev
            )
            for n in names
        ]
        self._fans = [w.shape[0] for w in self._weights8]
        # float path: float32 where every partial sum is an exact integer, else float64 (and float64
        # on CUDA, whose float32 matmuls may run in TF32)
        self._float_dtypes = [
            torch.float32 if f * QMAX * QMAX < FLOAT32_EXACT and dev.type == "cpu" else torch.float64
            for f in self._fans
        ]
        self._embed_f = self._embed8.to(self._float_dtypes[0])
        self._weights_f = [w.to(dt) for w, dt in zip(self._weights8, self._float_dtypes, strict=True)]
        self._step_bias = torch.from_numpy(a["context.step_bias"]).to(dev)
        self._class_bias = torch.from_numpy(a["context.class_bias"]).to(dev)
        # int16: a_int + U[hi] lies in [-QMAX, 2 QMAX], exact in int16 at a quarter of int64's traffic
        self._hi_embed = torch.from_numpy(a["hi_embed"].astype(np.int16)).to(dev)  # (K_hi, H)
        # the dtype each layer requantizes in: int32 where no partial value can reach 2^31, else int64
        narrow = [self.requant == "auto" and b <= INT32_EXACT for b in requant_bounds(c, a)]
        self._acc_dtypes = [torch.int32 if n else torch.int64 for n in narrow] + [torch.int64] * 2
        dts = self._acc_dtypes
        self._multipliers = [
            torch.from_numpy(a[f"{n}.multiplier"]).to(dev, dts[i]) for i, n in enumerate(names)
        ]
        self._skips = [torch.from_numpy(a[f"conv.{j}.skip"]).to(dev, dts[1 + j]) for j in range(self._convs)]
        self._shifts = [int(s) for s in a["shifts"]]
        # bias * M + 2^(S-1) of every layer after the context: |bias * M| < 2^56, exact in int64 (and
        # below 2^31 where the layer is int32: requant_bounds includes it)
        self._offsets = [
            torch.from_numpy(a[f"{n}.bias"] * a[f"{n}.multiplier"] + (1 << (self._shifts[i] - 1))).to(
                dev, dts[i]
            )
            for i, n in enumerate(names)
            if i > 0
        ]
        codes = np.arange(self._k_hi)[:, None] * self._k_lo + np.arange(self._k_lo)[None, :]
        invalid = codes >= c.codebook_size  # (K_hi, K_lo): lo values past K (row K_hi - 1 only)
        self._masked = torch.from_numpy(invalid).to(dev) if invalid.any() else None
        self._geometries: dict[tuple[int, int, int], tuple[Tensor, Tensor]] = {}
        self._constants: dict[tuple[int, int, int, int], Tensor] = {}  # `_constant_step`'s results
        order = a.get("code_order", np.arange(c.codebook_size, dtype=np.int64))
        self._order = torch.from_numpy(order).to(dev)  # code -> rank
        self._codes = torch.from_numpy(np.argsort(order)).to(dev)  # rank -> code

    # ------------------------------------------------------------------------------------ properties

    @property
    def config(self) -> PriorConfig:
        return self._config

    @property
    def codebook_size(self) -> int:
        return self._config.codebook_size

    @property
    def k_hi(self) -> int:
        """K_hi, the number of hi parts (vqkit.priors.grouped.split_sizes)."""
        return self._k_hi

    @property
    def k_lo(self) -> int:
        """K_lo, the number of lo parts: code x = hi * K_lo + lo."""
        return self._k_lo

    @property
    def width(self) -> int:
        """H, the length of a_int."""
        return self._config.width

    @property
    def num_classes(self) -> int:
        return self._config.num_classes

    @property
    def schedule(self) -> str:
        return self._config.schedule

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def int32_layers(self) -> tuple[str, ...]:
        """The layers (``layer_names``) that requantize in int32: those whose `requant_bound` is
        below 2^31, with ``requant`` "auto"."""
        names = layer_names(self._config)
        return tuple(n for n, dt in zip(names, self._acc_dtypes, strict=True) if dt == torch.int32)

    @property
    def format_version(self) -> int:
        """The integer prior format its file has: 4 with the "conv" context, else 3 with a code order
        and 2 without (identity), so that the files of earlier versions keep their digests."""
        if self._config.context == "conv":
            return CONV_SINCE
        return ORDER_SINCE if "code_order" in self._arrays else ORDER_SINCE - 1

    def split(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """codes (...) int64 in [0, K) -> (hi, lo) (...) each, the parts of each code's rank."""
        rank = self._order[codes.to(self.device)]
        return rank // self._k_lo, rank % self._k_lo

    def join(self, hi: Tensor, lo: Tensor) -> Tensor:
        """The inverse of `split`: hi, lo (...) int64 of ranks below K -> codes (...) int64;
        ValueError for a rank >= K (only a damaged stream decodes one)."""
        rank = hi.to(self.device) * self._k_lo + lo.to(self.device)
        if rank.numel() and (int(rank.min()) < 0 or int(rank.max()) >= self.codebook_size):
            raise ValueError(f"rank {int(rank.max())} is not below K = {self.codebook_size}")
        return self._codes[rank]

    def arrays(self) -> dict[str, np.ndarray]:
        """Copies of every integer tensor (``expected_shapes``), e.g. for the NumPy reference."""
        return {name: t.copy() for name, t in self._arrays.items()}

    def to(self, device: str | torch.device) -> IntegerPrior:
        """The same integer prior computing on ``device`` (same digest, same logits)."""
        return IntegerPrior(self._config, self._arrays, device=device, matmul=self.matmul, info=self.info)

    def digest(self) -> bytes:
        """SHA-256 over a canonical serialisation: the format, the config as sorted JSON, then every
        tensor in name order as its name, shape and little-endian int64 values."""
        h = hashlib.sha256()
        head = {"format": INTEGER_FORMAT, "format_version": self.format_version,
                "config": prior_config_to_dict(self._config)}  # fmt: skip
        h.update(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())
        for name in sorted(self._arrays):
            t = self._arrays[name]
            h.update(json.dumps([name, list(t.shape)], separators=(",", ":")).encode())
            h.update(t.astype("<i8").tobytes())
        return h.digest()

    # ------------------------------------------------------------------------------------- inference

    def _mm(self, x: Tensor, layer: int) -> Tensor:
        """x (n, fan_in) integers as int8, int32, int64 or the layer's float dtype -> x @ W^T (n, out)
        in the layer's requantization dtype (int32 or int64), exact (module docstring)."""
        if self._use_int_mm(x.shape[0], layer):
            return torch._int_mm(x.to(torch.int8), self._weights8[layer]).to(self._acc_dtypes[layer])
        return torch.matmul(x.to(self._float_dtypes[layer]), self._weights_f[layer]).to(
            self._acc_dtypes[layer]
        )

    def _use_int_mm(self, rows: int, layer: int) -> bool:
        if (
            self.matmul == "float"
            or not hasattr(torch, "_int_mm")
            or self._fans[layer] * QMAX * QMAX > INT32_EXACT
        ):
            return False
        if self.device.type == "cuda":  # only when asked for (module docstring)
            w = self._weights8[layer]  # cuBLASLt's int8 GEMM: m > 16 and k, n multiples of 8
            ok = self.matmul == "int_mm" and rows > 16 and w.shape[0] % 8 == 0 and w.shape[1] % 8 == 0
            if self.matmul == "int_mm" and not ok:
                raise ValueError(
                    f"torch._int_mm cannot multiply ({rows}, {w.shape[0]}) by {tuple(w.shape)} on CUDA"
                )
            return ok
        return self.device.type == "cpu"

    def _requantize(
        self, acc: Tensor, layer: int, offset: Tensor, *, clamp: bool = True, skip: Tensor | None = None
    ) -> Tensor:
        """The matmul's acc (..., c) in the layer's dtype (`_mm`), overwritten -> ((acc + bias) * M_c
        + 2^(S-1)) >> S, clamped to [0, 127] unless a head. ``offset`` = bias * M_c + 2^(S-1) (the same
        integer, fewer passes over acc: for large heads these element-wise passes cost more than the
        matmul). ``skip`` (..., c), a residual conv layer's input z: z * N_c is added before the shift."""
        acc.mul_(self._multipliers[layer]).add_(offset)
        if skip is not None:
            acc.addcmul_(skip.to(acc.dtype), self._skips[layer - 1])  # one pass, no temporary
        acc.bitwise_right_shift_(self._shifts[layer])
        return acc.clamp_(0, QMAX) if clamp else acc

    def _geometry(self, h: int, w: int, step: int) -> tuple[Tensor, Tensor]:
        """``step_geometry``'s window indices (n_s, k*k) and earlier-step mask (h, w) as tensors on
        the device, cached: a coder asks for the same few many times."""
        key = (h, w, step)
        if key not in self._geometries:
            radius = self._config.radius if self._config.context == "window" else 1  # conv: 3 x 3 taps
            _, window, earlier = step_geometry(self._config.schedule, h, w, step, radius)
            self._geometries[key] = (torch.from_numpy(window).to(self.device),
                                     torch.from_numpy(earlier).to(self.device))  # fmt: skip
        return self._geometries[key]

    def step_hidden(self, known: Tensor, step: int, start_ids: Tensor, *, checked: bool = True) -> Tensor:
        """The requantized features a_int of step ``step`` at its positions only: ``known`` (B, h, w)
        int64 holds the codes of the steps before ``step`` (other positions are ignored), ``start_ids``
        (B,) int64 the labels (num_classes: "no label") -> (B, n_s, H) int64 in [0, 127], the n_s
        positions of ``step`` in raster order (vqkit.priors.grouped.step_map). ``checked=False`` skips
        the input checks, for a caller whose inputs are valid by construction (the codec: codes it
        decoded itself, each checked below K); invalid inputs then give undefined results."""
        if checked:
            self._check_step_inputs(known, step, start_ids)
        b, h, w = known.shape
        if b and not self._reads_codes(h, w, step):
            return self._constant_step(h, w, step, start_ids)
        return self._step_hidden(known, step, start_ids)

    def _step_hidden(self, known: Tensor, step: int, start_ids: Tensor) -> Tensor:
        """`step_hidden` computed for every grid (no cache, no checks)."""
        if self._config.context == "conv":
            return self._conv_step_hidden(known, step, start_ids)
        b, h, w = known.shape
        c, dev = self._config, self.device
        window, earlier = self._geometry(h, w, step)
        win = window_codes(known.to(dev), window, earlier, c.radius, c.codebook_size)  # (B, n_s, k*k)
        n_s = len(window)
        if b * n_s == 0:  # a grid smaller than the schedule's tile can leave a step empty
            return torch.zeros(b, n_s, c.width, dtype=torch.int64, device=dev)
        table = self._embed8 if self._use_int_mm(b * n_s, 0) else self._embed_f
        x = table[win].reshape(b * n_s, -1)  # (B*n_s, k*k*E)
        bias = self._step_bias[step] + self._class_bias[start_ids.to(dev)]  # (B, H)
        offset = (bias * self._multipliers[0] + (1 << (self._shifts[0] - 1))).to(self._acc_dtypes[0])
        a = self._requantize(self._mm(x, 0).view(b, n_s, -1), 0, offset[:, None, :]).view(b * n_s, -1)
        return self._hidden_layers(a, 1).view(b, n_s, c.width)

    def _reads_codes(self, h: int, w: int, step: int) -> bool:
        """Whether ``step`` of an h x w grid sees any decoded code (the first step does not)."""
        key = (h, w, -1000 - step)
        if key not in self._geometries:
            reads = bool((step_map(self._config.schedule, h, w) < step).any())
            self._geometries[key] = (torch.tensor(reads), torch.empty(0))
        return bool(self._geometries[key][0])

    def _constant_step(self, h: int, w: int, step: int, start_ids: Tensor) -> Tensor:
        """`step_hidden` of a step that reads no decoded code: its features depend only on the grid
        size and the label, so each (h, w, step, label) is computed once (on a grid of zeros, which
        the step does not read) and kept; the same integers as computing it for every grid, at no cost
        per grid. (B,) start ids -> (B, n_s, H) int64."""
        ids = start_ids.to(self.device)
        rows = []
        for label in ids.unique().tolist():
            key = (h, w, step, label)
            if key not in self._constants:
                if len(self._constants) >= 64:  # a bound for callers that code many grid sizes
                    self._constants.clear()
                zeros = torch.zeros(1, h, w, dtype=torch.int64, device=self.device)
                label_t = torch.tensor([label], device=self.device)
                self._constants[key] = self._step_hidden(zeros, step, label_t)[0]
            rows.append(self._constants[key])
        inverse = torch.unique(ids, return_inverse=True)[1]
        return torch.stack(rows)[inverse]  # (B, n_s, H), a new tensor: the cache stays as it is

    def _hidden_layers(self, a: Tensor, first: int) -> Tensor:
        """Layers ``first`` .. the last before the heads on a (n, fan_in) int32 or int64 -> a_int (n, H)
        int64."""
        for i in range(first, self._head):
            a = self._requantize(self._mm(a, i), i, self._offsets[i - 1])
        return a.to(torch.int64)  # a_int is int64 whatever the last layer requantized in

    def _mm_dtype(self, rows: int, layer: int) -> torch.dtype:
        """The dtype a layer's matmul reads (``_mm``): int8 for ``_int_mm``, else its float dtype."""
        return torch.int8 if self._use_int_mm(rows, layer) else self._float_dtypes[layer]

    def _conv_step_hidden(self, known: Tensor, step: int, start_ids: Tensor) -> Tensor:
        """`step_hidden` of the "conv" context (module docstring, 1'-3'): the first J conv layers run
        at every position, the last one at the step's positions only (no other output is read)."""
        b, h, w = known.shape
        c, dev = self._config, self.device
        window, earlier = self._geometry(h, w, step)  # radius 1 for a conv context: the 3 x 3 taps
        n_s = len(window)
        if b * n_s == 0:  # a grid smaller than the schedule's tile can leave a step empty
            return torch.zeros(b, n_s, c.width, dtype=torch.int64, device=dev)
        # the embeddings of the padded grid: K (not decoded yet) or K + 1 (outside: zeros) where no code
        tokens = torch.where(earlier, known.to(dev), c.codebook_size)
        tokens = F.pad(tokens, (1, 1, 1, 1), value=c.codebook_size + 1)  # (B, h + 2, w + 2)
        n = h * w if self._convs else n_s  # the context layer's output positions: all, or the step's
        table = self._embed8 if self._mm_dtype(b * n, 0) == torch.int8 else self._embed_f
        x = self._taps(table[tokens], window if not self._convs else None)  # (B*n, 9E)
        bias = self._step_bias[step] + self._class_bias[start_ids.to(dev)]  # (B, C)
        offset = (bias * self._multipliers[0] + (1 << (self._shifts[0] - 1))).to(self._acc_dtypes[0])
        z = self._requantize(self._mm(x, 0).view(b, n, -1), 0, offset[:, None, :])  # (B, n, C)
        if self._convs:
            pos = self._positions(h, w, step)
            chans = z.shape[-1]
            padded = None  # one buffer for every layer of the step: its zero border never changes
            for j in range(self._convs):
                layer, last = 1 + j, j == self._convs - 1
                n = n_s if last else h * w
                dtype = self._mm_dtype(b * n, layer)
                if padded is None or padded.dtype != dtype:
                    padded = torch.zeros(b, h + 2, w + 2, chans, dtype=dtype, device=dev)
                padded[:, 1:-1, 1:-1] = z.view(b, h, w, chans)  # zeros outside: the zero padding
                y = self._taps(padded, window if last else None)  # (B*n, 9C)
                skip = (z[:, pos] if last else z).reshape(b * n, chans)
                z = self._requantize(self._mm(y, layer), layer, self._offsets[layer - 1], skip=skip)
                z = z.view(b, n, chans)
        a = self._hidden_layers(z.reshape(b * n_s, -1), 1 + self._convs)
        return a.view(b, n_s, c.width)

    @staticmethod
    def _taps(padded: Tensor, window: Tensor | None) -> Tensor:
        """im2col of a 3 x 3 convolution: ``padded`` (B, h + 2, w + 2, ch) (the grid with its zero
        border) -> (B * n, 9 * ch), each output position's 3 x 3 neighbourhood in (dy, dx, ch) order:
        every position (``window`` None), copied from a strided view (faster than a gather), or the
        positions whose taps ``window`` (n, 9) indexes in the flattened padded grid."""
        b, hp, wp, ch = padded.shape
        if window is not None:
            return padded.reshape(b, hp * wp, ch)[:, window].reshape(b * len(window), 9 * ch)
        h, w = hp - 2, wp - 2
        # a (B, h, w, 3, 3, ch) view whose (y, x, dy, dx) element is padded[y + dy, x + dx], copied out
        # by one reshape: several times faster than nine slice copies
        padded = padded.contiguous()
        sb, sy, sx, sc = padded.stride()
        view = padded.as_strided((b, h, w, 3, 3, ch), (sb, sy, sx, sy, sx, sc))
        return view.reshape(b * h * w, 9 * ch)

    def _positions(self, h: int, w: int, step: int) -> Tensor:
        """The raster positions (n_s,) of ``step`` on the device, cached."""
        key = (h, w, -2 - step)
        if key not in self._geometries:
            pos = step_geometry(self._config.schedule, h, w, step, 0)[0]
            self._geometries[key] = (torch.from_numpy(pos).to(self.device), torch.empty(0))
        return self._geometries[key][0]

    def hi_logits(self, a_int: Tensor, *, checked: bool = True) -> Tensor:
        """a_int (..., H) int64 in [0, 127] (`step_hidden`) -> q_hi (..., K_hi) int64, the logits of
        the hi part of the code's rank in units of 2^-12 nats (``checked``: as in `step_hidden`)."""
        if checked:
            self._check_features(a_int)
        layer = self._head
        a = a_int.reshape(-1, self.width).to(self.device)
        if not len(a):  # an empty step (a grid smaller than the schedule's tile)
            return torch.zeros(*a_int.shape[:-1], self._k_hi, dtype=torch.int64, device=self.device)
        q = self._requantize(self._mm(a, layer), layer, self._offsets[layer - 1], clamp=False)
        return q.view(*a_int.shape[:-1], self._k_hi)

    def lo_logits(self, a_int: Tensor, hi: Tensor, *, checked: bool = True) -> Tensor:
        """a_int (..., H) int64 in [0, 127] and hi (...) int64 in [0, K_hi) -> q_lo (..., K_lo) int64,
        the logits of the lo part of the code's rank given hi, in units of 2^-12 nats. A lo value whose
        rank hi * K_lo + lo is >= K gets the row's largest valid q minus MASK_GAP (32 nats): its table
        frequency is the minimum, 1; a valid encoder never codes it, and the codec refuses it when a
        damaged stream decodes to it. ``checked``: as in `step_hidden`."""
        if checked:
            self._check_features(a_int)
            if hi.dtype != torch.int64 or hi.shape != a_int.shape[:-1]:
                raise ValueError(
                    f"hi must be {tuple(a_int.shape[:-1])} int64, got {hi.dtype} {tuple(hi.shape)}"
                )
            if hi.numel() and (int(hi.min()) < 0 or int(hi.max()) >= self._k_hi):
                raise ValueError(f"hi must lie in [0, {self._k_hi})")
        layer = self._head + 1
        if not hi.numel():  # an empty step (a grid smaller than the schedule's tile)
            return torch.zeros(*a_int.shape[:-1], self._k_lo, dtype=torch.int64, device=self.device)
        hi_flat = hi.reshape(-1).to(self.device)
        a16 = a_int.reshape(-1, self.width).to(self.device, torch.int16)
        b = (a16 + self._hi_embed[hi_flat]).clamp_(0, QMAX)  # int16, exact (the table's comment)
        q = self._requantize(self._mm(b, layer), layer, self._offsets[layer - 1], clamp=False)
        if self._masked is not None:
            masked = self._masked[hi_flat]  # (n, K_lo)
            top = q.masked_fill(masked, torch.iinfo(torch.int64).min).amax(dim=-1, keepdim=True)
            q = torch.where(masked, top - MASK_GAP, q)
        return q.view(*a_int.shape[:-1], self._k_lo)

    def nll_bits(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """Teacher-forced ideal code length: indices (B, h, w) int64 -> (B,) float64 bits per grid,
        the sum over positions of -log2 p(hi) - log2 p(lo | hi), p the exact softmax (float64) of
        q / 2^12 (`ideal_bits`); for measurements (the integer tables approach it within their
        2^-20 resolution), not for coding."""
        if indices.ndim != 3 or indices.dtype != torch.int64:
            raise ValueError(f"indices must be (B, h, w) int64, got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.codebook_size})")
        b, h, w = indices.shape
        ids = self._start_ids(labels, b)
        flat = indices.to(self.device).reshape(b, -1)
        bits = torch.zeros(b, dtype=torch.float64, device=self.device)
        for s in range(self.steps):
            pos = step_geometry(self.schedule, h, w, s, self._config.radius)[0]
            if not len(pos):
                continue
            a = self.step_hidden(indices, s, ids)  # (B, n_s, H)
            hi, lo = self.split(flat[:, torch.from_numpy(pos).to(self.device)])  # (B, n_s) each
            bits += ideal_bits(self.hi_logits(a), hi).sum(dim=1)
            bits += ideal_bits(self.lo_logits(a, hi), lo).sum(dim=1)
        return bits

    def _check_features(self, a_int: Tensor) -> None:
        if a_int.dtype != torch.int64 or a_int.ndim < 1 or a_int.shape[-1] != self.width:
            raise ValueError(
                f"a_int must be (..., {self.width}) int64, got {a_int.dtype} {tuple(a_int.shape)}"
            )
        if a_int.numel() and (int(a_int.min()) < 0 or int(a_int.max()) > QMAX):
            raise ValueError(f"a_int must lie in [0, {QMAX}] (the output of step_hidden)")

    def _start_ids(self, labels: Tensor | None, n: int) -> Tensor:
        if labels is None:
            return torch.full((n,), self.num_classes, dtype=torch.int64, device=self.device)
        if self.num_classes == 0:
            raise ValueError("this prior is unconditional; pass labels=None")
        if labels.shape != (n,) or labels.dtype != torch.int64:
            raise ValueError(f"labels must be ({n},) int64, got {labels.dtype} {tuple(labels.shape)}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        return labels.to(self.device)

    def _check_step_inputs(self, known: Tensor, step: int, start_ids: Tensor) -> None:
        if known.ndim != 3 or known.dtype != torch.int64:
            raise ValueError(f"known must be (B, h, w) int64, got {known.dtype} {tuple(known.shape)}")
        if not 0 <= step < self.steps:
            raise ValueError(f"step must lie in [0, {self.steps}), got {step}")
        if start_ids.shape != (known.shape[0],) or start_ids.dtype != torch.int64:
            raise ValueError(f"start_ids must be ({known.shape[0]},) int64, got {tuple(start_ids.shape)}")
        if start_ids.numel() and (int(start_ids.min()) < 0 or int(start_ids.max()) > self.num_classes):
            raise ValueError(f"start_ids must lie in [0, {self.num_classes}]")
        earlier = torch.from_numpy(step_map(self.schedule, *known.shape[1:]) < step).to(known.device)
        used = known[:, earlier]
        if used.numel() and (int(used.min()) < 0 or int(used.max()) >= self.codebook_size):
            raise ValueError(f"known codes must lie in [0, {self.codebook_size})")

    # ------------------------------------------------------------------------------------------ files

    def save(self, path: str | Path) -> None:
        """Write a safetensors file (`write_file`) atomically: temp file + rename."""
        atomic_write(Path(path), self.write_file)

    def write_file(self, path: str | Path) -> None:
        """Write a safetensors file in place: the integer tensors, and as metadata the format name and
        version, the PriorConfig, ``info`` (JSON) and the digest. For commit sets (vqkit.runs.commit_files),
        which make the file atomic themselves; elsewhere use `save`."""
        metadata = {
            "format": INTEGER_FORMAT,
            "format_version": str(self.format_version),
            "prior_config": json.dumps(prior_config_to_dict(self._config)),
            "info": json.dumps(self.info),
            "digest": self.digest().hex(),
        }
        arrays = {name: np.ascontiguousarray(t) for name, t in self._arrays.items()}
        save_file(arrays, str(path), metadata=metadata)

    @classmethod
    def load(
        cls, path: str | Path, *, device: str | torch.device = "cpu", matmul: str = "auto"
    ) -> IntegerPrior:
        """Read a file written by `save`. RunError when it is missing, damaged, of another format or
        a newer version, or when any tensor has the wrong dtype, shape or range."""
        path = Path(path)
        if not path.is_file():
            raise RunError(f"no integer prior at {path}")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as e:
            raise RunError(f"{path} is not a readable integer prior (damaged or truncated?): {e}") from e
        if meta.get("format") != INTEGER_FORMAT:
            raise RunError(f"{path} is not a vqkit integer prior")
        try:
            version = int(meta.get("format_version", ""))
        except ValueError as e:
            raise RunError(f"{path}: bad format version {meta.get('format_version')!r}") from e
        if version > INTEGER_FORMAT_VERSION:
            raise RunError(f"{path} was written by a newer vqkit (integer prior format {version}); upgrade")
        if version < ORDER_SINCE - 1:  # format 1 had a single K-way head: nothing to convert
            raise RunError(
                f"{path} is integer prior format {version}, for the old one-part head; this vqkit reads "
                f"formats {ORDER_SINCE - 1} and {INTEGER_FORMAT_VERSION}: train the prior again "
                "(vqkit prior train RUN --overwrite)"
            )
        if version in (ORDER_SINCE - 1, ORDER_SINCE) and (version >= ORDER_SINCE) != (
            "code_order" in tensors
        ):
            raise RunError(f"{path}: integer prior format {version} and its tensors disagree (damaged)")
        try:
            config = prior_config_from_dict(json.loads(meta["prior_config"]))
            info = json.loads(meta.get("info", "{}"))
            prior = cls(config, tensors, device=device, matmul=matmul, info=info)
        except (KeyError, json.JSONDecodeError, ConfigError, ValueError) as e:
            raise RunError(f"{path}: not a valid integer prior: {e}") from e
        if version != prior.format_version:
            raise RunError(f"{path}: integer prior format {version} and its tensors disagree (damaged)")
        if meta.get("digest") != prior.digest().hex():
            raise RunError(f"{path}: its tensors do not match the digest it was saved with (damaged)")
        return prior


def ideal_bits(q: Tensor, symbols: Tensor) -> Tensor:
    """Integer logits q (..., n) and symbols (...) -> (...) float64 -log2 p, p = softmax(q * 2^-12)
    (exact in float64 up to its rounding): the code length the integer tables approach (within their
    2^-20 resolution)."""
    lp = torch.log_softmax(q.to(torch.float64) / (1 << LOGIT_BITS), dim=-1)
    return -lp.gather(-1, symbols[..., None])[..., 0] / math.log(2.0)


def integer_bits_per_code(prior: IntegerPrior, grids: np.ndarray, labels: np.ndarray | None = None,
                          *, batch_size: int = 256) -> float:  # fmt: skip
    """Mean ideal code length (`IntegerPrior.nll_bits`) in bits per code of ``grids`` (N, h, w) under
    ``prior``."""
    total, count = 0.0, 0
    for lo in range(0, len(grids), batch_size):
        g = torch.from_numpy(np.ascontiguousarray(grids[lo : lo + batch_size], dtype=np.int64))
        lab = (
            None
            if labels is None
            else torch.from_numpy(np.asarray(labels[lo : lo + batch_size], dtype=np.int64))
        )
        total += float(prior.nll_bits(g, lab).sum())
        count += g.numel()
    return total / max(count, 1)
