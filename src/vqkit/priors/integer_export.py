"""`export_integer`: post-training quantization of a trained `GroupedPrior` to an `IntegerPrior`.

* embeddings: one scale, max |v| -> 127;
* weights: symmetric, one scale per output channel, max |w| -> 127 (a channel whose bias would not
  fit 2^40 accumulator units gets a coarser scale: only a channel of near-zero weights can);
* activations after each ReLU: one scale per layer, a percentile of the layer's float activations
  on the calibration grids (every step's positions) -> 127; the percentile of ``PERCENTILES`` whose
  integer network codes the calibration grids in the fewest bits wins (the measured choice: on
  trained tiny models the differences are ~0.1 %, and the best one varies by model);
* biases (context bias + step embedding, and class embedding, separately) rounded to accumulator
  units (input scale * weight scale of the channel);
* a residual conv layer z + conv(z) ("conv" context): z's own multiplier N = input scale / output
  scale beside the conv's M, with the same shift;
* the hi embedding U (K_hi, H) rounded to the units of the last layer's activations a, clipped to
  [-127, 127] (lossless: the lo part clamps a + U to [0, 127] anyway), so b = relu(a + U[hi]) is an
  integer addition and a clamp;
* multipliers: M / 2^S = input scale * weight scale / output scale, M < 2^16, one shift S per layer;
  both heads' output scale is 2^-12 nats (the grouped model has no temperature: ``logit_scale`` is 1).
  A layer before the heads then takes the largest shift S' <= S whose multipliers (and skip
  multipliers) keep every partial value of its requantization below 2^31 (integer.requant_bound),
  so the network requantizes it in int32, when its largest M at S' is still >= 2^NARROW_MIN_BITS:
  the rounding of M then moves an output of at most 127 by less than 127 / 2^10 of a unit, which
  the round to an integer output mostly absorbs (measured: no change in bits per code beyond
  noise); otherwise the layer keeps S and requantizes in int64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vqkit.priors.grouped import GroupedPrior
from vqkit.priors.integer import (
    BIAS_LIMIT,
    INT32_EXACT,
    LOGIT_BITS,
    MAX_SHIFT,
    MIN_HEAD_SHIFT,
    MULTIPLIER_BITS,
    QMAX,
    SKIP_BITS,
    IntegerPrior,
    conv_count,
    hidden_count,
    integer_bits_per_code,
    layer_names,
    requant_bound,
    step_geometry,
)

PERCENTILES = (99.9, 99.99, 99.999, 100.0)  # activation-scale candidates; export measures each
NARROW_MIN_BITS = 9  # an int32 requantization must leave the layer's largest multiplier >= 2^9


def _scale(max_abs: np.ndarray | float) -> np.ndarray:
    """Symmetric scale mapping max_abs to QMAX; a zero range gets scale 1/QMAX (its values are all 0)."""
    m = np.asarray(max_abs, dtype=np.float64)
    return np.where(m > 0, m, 1.0) / QMAX


def _multipliers(m: np.ndarray, *, max_shift: int = MAX_SHIFT) -> tuple[np.ndarray, int]:
    """Real multipliers m (c,) >= 0 -> integers M (c,) < 2^16 and one shift S <= max_shift with
    M / 2^S ~ m."""
    top = float(m.max(initial=0.0))
    if top >= (1 << (MULTIPLIER_BITS - 1)) or max_shift < 1:
        raise ValueError(f"requantization multiplier {top:.3g} too large for a shift >= 1")
    # the largest shift that keeps the largest M below 2^16 (M < 2^16 and |acc| < 2^46: no overflow)
    s = max_shift if top == 0 else min(max_shift, math.floor(math.log2(((1 << MULTIPLIER_BITS) - 1) / top)))
    return _at_shift(m, s), s


def _at_shift(m: np.ndarray, s: int) -> np.ndarray:
    """Real multipliers m (c,) -> round(m * 2^s) as int64, capped below 2^16."""
    return np.minimum(np.rint(m * 2.0**s).astype(np.int64), (1 << MULTIPLIER_BITS) - 1)


def _narrow(out: dict[str, np.ndarray], name: str, shift: int, m: np.ndarray, skip: float) -> int:
    """Layer ``name``'s shift for an int32 requantization (module docstring): the largest S' <= ``shift``
    whose multipliers round(m * 2^S') (and skip multipliers round(skip * 2^S')) bound the layer's
    requantization below 2^31, written into ``out``; ``shift`` and ``out`` unchanged when none keeps
    the largest multiplier >= 2^NARROW_MIN_BITS."""
    for s in range(shift, 0, -1):
        mult = _at_shift(m, s)
        if int(mult.max(initial=0)) < 1 << NARROW_MIN_BITS:
            return shift
        trial = {**out, f"{name}.multiplier": mult}
        if skip:
            trial[f"{name}.skip"] = np.full(len(mult), round(skip * 2.0**s), dtype=np.int64)
        if requant_bound(trial, name, s) <= INT32_EXACT:
            out.update({k: trial[k] for k in (f"{name}.multiplier", f"{name}.skip") if k in trial})
            return s
    return shift


def _quantize_weight(w: np.ndarray, bias_abs: np.ndarray, in_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """w (out, fan_in) float -> (int8 weights, per-channel scale). A channel whose bias would not fit
    BIAS_LIMIT accumulator units (only a channel of near-zero weights) gets a coarser scale."""
    scale = np.maximum(_scale(np.abs(w).max(axis=1)), bias_abs / (in_scale * (BIAS_LIMIT >> 1)))
    return np.clip(np.rint(w / scale[:, None]), -QMAX, QMAX).astype(np.int8), scale


def _float_weights(prior: GroupedPrior) -> dict[str, np.ndarray]:
    sd = {k: v.detach().to("cpu", torch.float64).numpy() for k, v in prior.state_dict().items()}
    return sd


@torch.no_grad()
def _float_pass(
    prior: GroupedPrior, p: dict[str, Tensor], grids: Tensor, ids: Tensor, step: int
) -> tuple[list[Tensor], Tensor, Tensor]:
    """The float model (``p``: its state dict in float64 on the CPU) at the positions of ``step``: the
    activations after each ReLU [(B, n, C or H)] (the context and conv layers of a "conv" context at
    every position, the rest at the step's positions; the last is a), the hi logits (B, n_s, K_hi)
    and the lo logits given the true hi part (B, n_s, K_lo), unmasked. Mirrors GroupedPrior.step_hidden,
    hi_logits and lo_logits (export checks it)."""
    c = prior.config
    h, w = grids.shape[1:]
    conv = c.context == "conv"
    pos, _, earlier = step_geometry(c.schedule, h, w, step, c.radius)
    pos_t = torch.from_numpy(pos)
    tokens = torch.where(torch.from_numpy(earlier), grids, c.codebook_size)
    x = p["embed.weight"][tokens].permute(0, 3, 1, 2)
    a = F.conv2d(x, p["context.weight"], p["context.bias"], padding=1 if conv else c.radius)
    a = F.relu(a + (p["step_embed.weight"][step] + p["class_embed.weight"][ids])[:, :, None, None])
    acts = []

    def everywhere(t: Tensor) -> Tensor:  # (B, ch, h, w) -> (B, h*w, ch)
        return t.permute(0, 2, 3, 1).reshape(len(grids), h * w, -1)

    if conv:
        acts.append(everywhere(a))
        for j in range(conv_count(c)):
            a = F.relu(a + F.conv2d(a, p[f"convs.{j}.weight"], p[f"convs.{j}.bias"], padding=1))
            acts.append(everywhere(a))
    a = everywhere(a)[:, pos_t]
    if not conv:  # the window context's ReLU output, read at the step's positions only
        acts.append(a)
    for i in range(hidden_count(c)):
        a = F.relu(a @ p[f"hidden.{i}.weight"].T + p[f"hidden.{i}.bias"])
        acts.append(a)
    x = grids.reshape(len(grids), -1)[:, pos_t]  # (B, n_s), on the CPU as p is
    hi = prior.split(x.to(prior.code_order.device))[0].cpu()
    b = F.relu(a + p["hi_embed.weight"][hi])
    return acts, a @ p["head.weight"].T + p["head.bias"], b @ p["head_lo.weight"].T + p["head_lo.bias"]


def _build_tensors(prior: GroupedPrior, act_scales: list[float]) -> tuple[dict[str, np.ndarray], list[float]]:
    """The integer tensors for activation scales ``act_scales`` (one per ReLU layer), and the scales
    used: each raised where needed so that the multipliers into its layer stay below 2^14 (a shift
    >= 1 then exists; only a dead or nearly dead layer needs it)."""
    act_scales = list(act_scales)
    c, p = prior.config, _float_weights(prior)
    names = layer_names(c)
    relus = len(names) - 2  # every layer but the two heads
    out: dict[str, np.ndarray] = {}
    s_e = float(_scale(np.abs(p["embed.weight"]).max()))
    out["embed"] = np.clip(np.rint(p["embed.weight"] / s_e), -QMAX, QMAX).astype(np.int8)
    first, _, side, _ = p["context.weight"].shape
    w0 = p["context.weight"].transpose(0, 2, 3, 1).reshape(first, -1)  # (out, k*k*E) in (dy, dx, e) order
    step_b = p["context.bias"][None, :] + p["step_embed.weight"]  # (G, out)
    class_b = p["class_embed.weight"]  # (C + 1, out)
    bias_abs = np.abs(step_b).max(axis=0) + np.abs(class_b).max(axis=0)
    wq, sw = _quantize_weight(w0, bias_abs, s_e)
    unit = s_e * sw  # (out,) real value of one accumulator unit per channel
    out["context.weight"] = wq.reshape(first, side, side, c.embed_dim)
    out["context.step_bias"] = np.rint(step_b / unit).astype(np.int64)
    out["context.class_bias"] = np.rint(class_b / unit).astype(np.int64)
    shifts = []
    reals: dict[str, tuple[np.ndarray, float]] = {}  # name -> (real M, real N) of pre-head layers
    act_scales[0] = max(act_scales[0], float(unit.max()) / (1 << 14))
    reals["context"] = (unit / act_scales[0], 0.0)
    out["context.multiplier"], s = _multipliers(reals["context"][0])
    shifts.append(s)
    for i, name in enumerate(names[1:], start=1):
        in_scale = act_scales[min(i - 1, relus - 1)]  # both heads read a (head_lo: b, a's units)
        conv = name.startswith("conv.")
        if conv:  # (C, C, 3, 3) -> (C, 3*3*C) in (dy, dx, c) order
            key = "convs." + name.split(".")[1]
            w = p[f"{key}.weight"].transpose(0, 2, 3, 1).reshape(len(p[f"{key}.weight"]), -1)
            b = p[f"{key}.bias"]
        else:
            w, b = p[f"{name}.weight"], p[f"{name}.bias"]
        wq, sw = _quantize_weight(w, np.abs(b), in_scale)
        unit = in_scale * sw
        out[f"{name}.weight"] = wq.reshape(len(wq), 3, 3, -1) if conv else wq
        out[f"{name}.bias"] = np.rint(b / unit).astype(np.int64)
        if i < relus:
            act_scales[i] = max(act_scales[i], float(unit.max()) / (1 << 14), in_scale / (1 << 30))
            out[f"{name}.multiplier"], s = _multipliers(unit / act_scales[i])
            skip = 0.0
            if conv:  # the residual z: its multiplier N = in_scale / out_scale at the same shift
                skip = in_scale / act_scales[i]
                s = min(s, math.floor(math.log2(((1 << SKIP_BITS) - 1) / skip)))
                out[f"{name}.multiplier"], s = _multipliers(unit / act_scales[i], max_shift=s)
                out[f"{name}.skip"] = np.full(len(wq), round(skip * 2.0**s), dtype=np.int64)
            reals[name] = (unit / act_scales[i], skip)
        else:  # logits in units of 2^-12 nats
            out[f"{name}.multiplier"], s = _multipliers(unit * (1 << LOGIT_BITS))
            if s < MIN_HEAD_SHIFT:
                raise ValueError(f"{name}: one accumulator unit is worth over 2 nats; cannot quantize")
        shifts.append(s)
    last = act_scales[relus - 1]
    out["hi_embed"] = np.clip(np.rint(p["hi_embed.weight"] / last), -QMAX, QMAX).astype(np.int8)
    for i, name in enumerate(names[:relus]):
        shifts[i] = _narrow(out, name, shifts[i], *reals[name])
    out["shifts"] = np.array(shifts, dtype=np.int64)
    order = prior.code_order.detach().cpu().numpy().astype(np.int64)
    if not np.array_equal(order, np.arange(c.codebook_size)):  # identity: stored as absent (format 2)
        out["code_order"] = order
    return out, act_scales


def _activation_scales(values: np.ndarray) -> list[float]:
    """Per percentile of PERCENTILES, the scale mapping it (of the positive ``values``) to QMAX; 0 for
    a dead layer (`_build_tensors` then sets a floor)."""
    pos = values[values > 0]
    if not pos.size:
        return [0.0] * len(PERCENTILES)
    return [float(v) / QMAX for v in np.percentile(pos, PERCENTILES)]


@torch.no_grad()
def export_integer(prior: GroupedPrior, grids: np.ndarray, labels: np.ndarray | None = None) -> IntegerPrior:
    """Quantize a trained grouped prior (post-training) on calibration ``grids`` (N, h, w) int64 (held
    out from training; e.g. 512) and their ``labels`` (N,) (None: "no label"). The activation scales
    come from a percentile of each layer's float activations at every step's positions; the
    percentile of ``PERCENTILES`` with the lowest ideal code length on ``grids`` wins."""
    if not isinstance(prior, GroupedPrior):
        raise ValueError("export_integer needs a GroupedPrior")
    c = prior.config
    g = np.asarray(grids)
    if g.ndim != 3 or len(g) == 0 or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"calibration grids must be (N, h, w) integers with N >= 1, got {g.dtype} {g.shape}")
    if int(g.min()) < 0 or int(g.max()) >= c.codebook_size:
        raise ValueError(f"calibration grids must hold codes in [0, {c.codebook_size})")
    g_t = torch.from_numpy(g.astype(np.int64))
    if labels is not None and c.num_classes:
        lab = np.asarray(labels, dtype=np.int64)
        if lab.shape != (len(g),) or (lab.size and (lab.min() < 0 or lab.max() >= c.num_classes)):
            raise ValueError(f"labels must be ({len(g)},) in [0, {c.num_classes})")
        ids = torch.from_numpy(lab)
    else:
        lab, ids = None, torch.full((len(g),), c.num_classes, dtype=torch.int64)
    was_training = prior.training
    prior.eval()
    try:
        acts = _calibration_activations(prior, g_t, ids)
    finally:
        prior.train(was_training)
    best: tuple[float, IntegerPrior] | None = None
    per_layer = [_activation_scales(values) for values in acts]  # [layer][percentile]
    for j, pct in enumerate(PERCENTILES):
        tensors, scales = _build_tensors(prior, [s[j] for s in per_layer])
        candidate = IntegerPrior(c, tensors, info={"activation_percentile": pct, "activation_scales": scales,
                                                   "calibration_grids": len(g)})  # fmt: skip
        bits = integer_bits_per_code(candidate, g, lab if c.num_classes else None)
        candidate.info["calibration_bits_per_code"] = bits
        if best is None or bits < best[0]:
            best = (bits, candidate)
    assert best is not None
    return best[1]


def _calibration_activations(prior: GroupedPrior, grids: Tensor, ids: Tensor) -> list[np.ndarray]:
    """Per ReLU layer, a deterministic sample (<= 2^22) of its float activations over every step's
    positions of ``grids``; checks on the way that `_float_pass` reproduces the prior's hi and lo
    logits."""
    c = prior.config
    weights = {k: v.detach().to("cpu", torch.float64) for k, v in prior.state_dict().items()}
    per_layer: list[list[np.ndarray]] = [[] for _ in range(len(layer_names(c)) - 2)]  # ReLU layers
    h, w = grids.shape[1:]
    for lo in range(0, len(grids), 64):
        gb, ib = grids[lo : lo + 64], ids[lo : lo + 64]
        for s in range(prior.steps):
            pos = step_geometry(c.schedule, h, w, s, c.radius)[0]
            if not len(pos):
                continue
            acts, hi_logits, lo_logits = _float_pass(prior, weights, gb, ib, s)
            if lo == 0 and s == 0:  # the mirror must stay the model: a changed GroupedPrior breaks it
                _check_mirror(prior, gb, ib, s, hi_logits, lo_logits)
            for i, a in enumerate(acts):
                per_layer[i].append(a.reshape(-1).numpy().astype(np.float32))
    out = []
    for chunks in per_layer:
        v = np.concatenate(chunks)
        stride = max(1, len(v) >> 22)
        out.append(v[::stride])
    return out


def _check_mirror(prior: GroupedPrior, grids: Tensor, ids: Tensor, step: int, hi_logits: Tensor,
                  lo_logits: Tensor) -> None:  # fmt: skip
    """RuntimeError unless `_float_pass`'s logits at ``step`` are the prior's own (GroupedPrior's
    step_hidden, hi_logits and lo_logits given the true hi; masked lo values aside)."""
    b, h, w = grids.shape
    pos = torch.from_numpy(step_geometry(prior.config.schedule, h, w, step, prior.config.radius)[0])
    dev = prior.head.weight.device
    a = prior.step_hidden(grids.to(dev), step, ids.to(dev))
    hi = prior.split(grids.reshape(b, -1)[:, pos].to(dev))[0]
    ref_hi = prior.hi_logits(a).cpu().double()
    ref_lo = prior.lo_logits(a, hi).cpu().double()
    valid = torch.isfinite(ref_lo)
    if not (
        torch.allclose(ref_hi, hi_logits, rtol=1e-4, atol=1e-3)
        and torch.allclose(ref_lo[valid], lo_logits[valid], rtol=1e-4, atol=1e-3)
        and torch.equal(valid, ~prior.invalid[hi].cpu())
    ):
        raise RuntimeError(
            "export_integer's float pass no longer matches GroupedPrior.step_hidden / hi_logits / lo_logits"
        )
