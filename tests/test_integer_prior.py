"""The integer prior: its torch inference equals an independent NumPy int64 reference bit for bit (any
batch size, grid size, schedule, thread count, CPU capability, matmul path, device); the exactness
bounds hold at their worst case; quantization costs under 1 % of the float model's bits; save -> load
is exact and damaged or foreign files are refused; `vqkit prior train` exports it with the prior."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from vqkit.cli import main
from vqkit.codec.tables import (
    LOGIT_BITS,
    TOTAL,
    code_bits,
    frequencies_from_int_logits,
    frequencies_from_logits,
    quantize_logits,
)
from vqkit.pipeline import train
from vqkit.priors import GroupedPrior, PriorConfig, load_prior
from vqkit.priors import integer as integer_mod
from vqkit.priors.build import build_prior
from vqkit.priors.grouped import SCHEDULES, step_map
from vqkit.priors.integer import IntegerPrior, expected_shapes, layer_names, requant_bounds
from vqkit.priors.integer_export import export_integer
from vqkit.priors.integer_reference import ReferencePrior
from vqkit.runs import RunError
from vqkit.runs.layout import INTEGER_PRIOR_FILE

from .conftest import smooth_images, tiny_run_config

K = 36  # K_hi x K_lo = 5 x 8: four lo values of hi = 4 lie past K and are masked


@pytest.fixture(autouse=True)
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def random_grouped(
    schedule: str, *, k: int = K, num_classes: int = 3, seed: int = 0, context: str = "window"
) -> GroupedPrior:
    """Random weights large enough to drive activations into the clamp and logits over tens of nats.
    The "conv" context: three conv layers (two residual) of 16 channels, then two linear layers."""
    torch.manual_seed(seed)
    sizes = (
        {"layers": 3, "radius": 2} if context == "window" else {"layers": 2, "channels": 16, "conv_layers": 3}
    )
    cfg = PriorConfig(kind="grouped", schedule=schedule, codebook_size=k, num_classes=num_classes,
                      width=32, embed_dim=8, context=context, **sizes)  # fmt: skip
    prior = build_prior(cfg)
    assert isinstance(prior, GroupedPrior)
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0.0, 0.3)
    return prior.eval()


EXPORTED = [(s, "window") for s in sorted(SCHEDULES)] + [("2x2", "conv"), ("4x4-5", "conv")]


@pytest.fixture(scope="module", params=EXPORTED, ids=[f"{s}-{c}" for s, c in EXPORTED])
def exported(request: pytest.FixtureRequest) -> IntegerPrior:
    schedule, context = request.param
    prior = random_grouped(schedule, context=context)
    grids = np.random.default_rng(0).integers(0, K, (24, 8, 8))
    return export_integer(prior, grids, np.arange(24) % 3)


def reference(ip: IntegerPrior) -> ReferencePrior:
    c = ip.config
    return ReferencePrior(ip.arrays(), schedule=c.schedule, radius=c.radius, num_classes=c.num_classes,
                          context=c.context)  # fmt: skip


def random_batch(b: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, K, (b, h, w), generator=g), torch.randint(0, 4, (b,), generator=g) % 3


def step_codes(schedule: str, x: torch.Tensor, step: int) -> torch.Tensor:
    """The codes (B, n_s) of ``step``'s positions in raster order."""
    rows = np.flatnonzero(step_map(schedule, *x.shape[1:]).reshape(-1) == step)
    return x.reshape(len(x), -1)[:, torch.from_numpy(rows)]


def every_step(ip: IntegerPrior, x: torch.Tensor, labels: torch.Tensor) -> list[list[np.ndarray]]:
    """Per step, teacher-forced: [a_int (B, n_s, H), q_hi (B, n_s, K_hi), q_lo given the true hi
    (B, n_s, K_lo), q_lo for every hi (B, n_s, K_hi, K_lo)] from the torch path."""
    out = []
    for s in range(ip.steps):
        a = ip.step_hidden(x, s, labels)
        hi = ip.split(step_codes(ip.schedule, x, s))[0]
        every = torch.arange(ip.k_hi).expand(*hi.shape, ip.k_hi)
        lo_all = ip.lo_logits(a[..., None, :].expand(*hi.shape, ip.k_hi, ip.width), every)
        out.append([t.cpu().numpy() for t in (a, ip.hi_logits(a), ip.lo_logits(a, hi), lo_all)])
    return out


def every_step_reference(ip: IntegerPrior, x: torch.Tensor, labels: torch.Tensor) -> list[list[np.ndarray]]:
    """`every_step` from the NumPy int64 reference, fed only its own outputs."""
    ref = reference(ip)
    out = []
    for s in range(ip.steps):
        a = ref.step_hidden(x.numpy(), s, labels.numpy())
        hi = ref.split(step_codes(ip.schedule, x, s).numpy())[0]
        every = np.broadcast_to(np.arange(ref.k_hi), (*hi.shape, ref.k_hi))
        lo_all = ref.lo_logits(a[..., None, :], every)
        out.append([a, ref.hi_logits(a), ref.lo_logits(a, hi), lo_all])
    return out


def assert_same(got: list[list[np.ndarray]], want: list[list[np.ndarray]], what: object) -> None:
    for s, (g, w) in enumerate(zip(got, want, strict=True)):
        for name, u, v in zip(("a_int", "q_hi", "q_lo", "q_lo(every hi)"), g, w, strict=True):
            assert u.dtype == np.int64 and np.array_equal(u, v), (what, s, name)


def test_export_requantizes_in_int32_with_the_same_integers(exported: IntegerPrior) -> None:
    """The export picks multipliers that bound every layer before the heads below 2^31, so those run
    in int32; the same tensors requantized in int64 give the same integers."""
    assert exported.int32_layers == tuple(layer_names(exported.config)[:-2])
    assert all(b < 2**31 for b in requant_bounds(exported.config, exported.arrays()))
    wide = IntegerPrior(exported.config, exported.arrays(), requant="int64")
    assert wide.int32_layers == ()
    x, labels = random_batch(16, 8, 8, seed=3)
    assert_same(every_step(exported, x, labels), every_step(wide, x, labels), "int32 vs int64")


@pytest.mark.parametrize("shape", [(8, 8), (5, 7), (16, 12)])
def test_torch_equals_numpy_reference(exported: IntegerPrior, shape: tuple[int, int]) -> None:
    paths = {m: IntegerPrior(exported.config, exported.arrays(), matmul=m) for m in ("float", "int_mm")}
    for b in (1, 2, 7, 64):
        x, labels = random_batch(b, *shape, seed=b)
        want = every_step_reference(exported, x, labels)
        q = np.concatenate([t.reshape(-1) for w in want for t in w[1:]])
        assert np.abs(q).max() > 3 << LOGIT_BITS  # logits over nats, not fractions: the scale is exercised
        if b == 64:  # both clamps of a_int and of b = a_int + U[hi] are exercised
            a_int = np.concatenate([w[0].reshape(-1, exported.width) for w in want])
            b_int = a_int[:, None, :] + exported.arrays()["hi_embed"][None].astype(np.int64)
            assert (a_int == 0).any() and (a_int == 127).any() and (b_int < 0).any() and (b_int > 127).any()
        for name, ip in paths.items():
            assert_same(every_step(ip, x, labels), want, (name, b))
        # a batch's rows are the rows of its grids computed alone (no batch-size dependence)
        if b == 7:
            alone = every_step(paths["float"], x[3:4], labels[3:4])
            assert_same(alone, [[t[3:4] for t in w] for w in want], "alone")


def test_step_hidden_ignores_the_codes_of_its_own_and_later_steps(exported: IntegerPrior) -> None:
    x, labels = random_batch(3, 6, 9, seed=5)
    steps = step_map(exported.schedule, 6, 9).reshape(-1)
    for s in range(exported.steps):
        noisy = x.clone().reshape(3, -1)
        later = torch.from_numpy(steps >= s)
        noisy[:, later] = torch.randint(0, K, (3, int(later.sum())))
        got = exported.step_hidden(noisy.view(3, 6, 9), s, labels)
        assert got.shape == (3, int((steps == s).sum()), exported.width) and got.dtype == torch.int64
        assert torch.equal(got, exported.step_hidden(x, s, labels))
        assert int(got.min()) >= 0 and int(got.max()) <= 127


def test_grids_smaller_than_a_tile(exported: IntegerPrior) -> None:
    x, labels = random_batch(2, 3, 2, seed=6)  # the 4x4 schedules leave steps without positions
    assert_same(every_step(exported, x, labels), every_step_reference(exported, x, labels), "3x2")
    empty = [s for s in range(exported.steps) if not (step_map(exported.schedule, 3, 2) == s).any()]
    assert empty or exported.schedule == "2x2"
    for s in empty:
        a = exported.step_hidden(x, s, labels)
        assert a.shape == (2, 0, exported.width)
        assert exported.hi_logits(a).shape == (2, 0, exported.k_hi)
        assert exported.lo_logits(a, torch.zeros(2, 0, dtype=torch.int64)).shape == (2, 0, exported.k_lo)


def test_thread_counts_give_identical_logits(exported: IntegerPrior) -> None:
    x, labels = random_batch(64, 16, 12, seed=3)
    out = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out.append(every_step(exported, x, labels))
    assert_same(out[0], out[1], "threads")


def test_masked_lo_values_get_the_lowest_q(exported: IntegerPrior) -> None:
    """Codes hi * K_lo + lo >= K: their q is 32 nats below the row's top, so their table frequency
    is the minimum 1, while every valid lo value keeps its q; the float model masks the same ones."""
    assert (exported.k_hi, exported.k_lo) == (5, 8) and exported.k_hi * exported.k_lo > K
    x, labels = random_batch(16, 8, 8, seed=7)
    a = exported.step_hidden(x, 0, labels).reshape(-1, exported.width)
    last = torch.full((len(a),), exported.k_hi - 1, dtype=torch.int64)
    q = exported.lo_logits(a, last).numpy()
    valid = K - (exported.k_hi - 1) * exported.k_lo  # lo values of the last hi that are codes
    top = q[:, :valid].max(axis=1)
    assert (q[:, valid:] == (top - integer_mod.MASK_GAP)[:, None]).all()
    freq = frequencies_from_int_logits(q)
    assert (freq[:, valid:] == 1).all() and (freq.sum(axis=1) == TOTAL).all()
    # the valid lo values are the unmasked network's: the same row from a prior whose K fills the grid
    c = exported.config
    full = IntegerPrior(
        dataclasses.replace(c, codebook_size=exported.k_hi * exported.k_lo),
        {**exported.arrays(), "embed": np.zeros((exported.k_hi * exported.k_lo + 1, c.embed_dim), np.int8)},
    )
    unmasked = full.lo_logits(a, last).numpy()
    assert np.array_equal(q[:, :valid], unmasked[:, :valid]) and not np.array_equal(q, unmasked)
    other = exported.lo_logits(a, last - 1).numpy()  # no other hi has masked values
    assert np.array_equal(other, full.lo_logits(a, last - 1).numpy())
    prior = random_grouped(exported.schedule, context=exported.config.context)
    assert torch.equal(prior.invalid, torch.from_numpy(np.arange(40).reshape(5, 8) >= K))


def test_inputs_are_checked(exported: IntegerPrior) -> None:
    x, labels = random_batch(2, 8, 8, seed=0)
    with pytest.raises(ValueError, match="step"):
        exported.step_hidden(x, exported.steps, labels)
    bad = x.clone()
    bad[:, 0, 0] = K  # position (0, 0) is in step 0 of every schedule: known to every later step
    with pytest.raises(ValueError, match="known codes"):
        exported.step_hidden(bad, 1, labels)
    exported.step_hidden(bad, 0, labels)  # at step 0 no code is known: its value does not matter
    with pytest.raises(ValueError, match="start_ids"):
        exported.step_hidden(x, 0, torch.tensor([0, 4]))
    a = exported.step_hidden(x, 0, labels)
    hi = torch.zeros(a.shape[:-1], dtype=torch.int64)
    for wrong in (a + 128, a - 128, a.to(torch.int32), a[..., :-1]):  # int8 would wrap: refused
        with pytest.raises(ValueError, match="a_int"):
            exported.hi_logits(wrong)
        with pytest.raises(ValueError, match="a_int"):
            exported.lo_logits(wrong, hi[..., : wrong.shape[-2]])
    for wrong in (hi + exported.k_hi, hi - 1, hi[:, :-1]):
        with pytest.raises(ValueError, match="hi must"):
            exported.lo_logits(a, wrong)
    with pytest.raises(ValueError, match="indices"):
        exported.nll_bits(bad)


# --------------------------------------------------------------------------------- exactness bounds


def worst_case(width: int, radius: int, embed_dim: int, k: int = 16, channels: int = 0) -> IntegerPrior:
    """Every weight, embedding and hi embedding at +127 (the largest partial sums there are) and biases
    0, so that every accumulator reaches fan_in * 127 * 127; multipliers 1 with shift 1 keep
    activations at 127 (and b = clamp(127 + 127) = 127), the heads' shift 2 gives q = acc / 4.
    ``channels`` > 0: the "conv" context with two conv layers of that many channels (fan_in 9 x C),
    whose residual adds z * N, N = 2^31, at the largest z."""
    conv = {"context": "conv", "channels": channels, "conv_layers": 2, "layers": 1} if channels else {}
    sizes = {"width": width, "layers": 2, "embed_dim": embed_dim, "radius": radius, **conv}
    cfg = PriorConfig(kind="grouped", codebook_size=k, schedule="2x2", heads=1, **sizes)
    tensors = {}
    for name, (shape, dtype) in expected_shapes(cfg).items():
        fill = {"int8": 127, "int64": 0}[dtype]
        tensors[name] = np.full(shape, fill, dtype=dtype)
    for name in tensors:
        if name.endswith(".multiplier"):
            tensors[name][:] = 1
    if channels:
        tensors["conv.0.skip"][:] = 1 << 31
    tensors["shifts"][:] = [1] * (len(tensors["shifts"]) - 2) + [2, 2]
    return IntegerPrior(cfg, tensors, matmul="float")


@pytest.mark.parametrize(
    ("width", "radius", "embed_dim", "channels"),
    [(1040, 0, 1, 0), (1041, 0, 1, 0), (16, 3, 16, 0), (16, 4, 16, 0), (16, 0, 115, 115), (16, 0, 116, 116)],
)
def test_worst_case_accumulations_stay_exact(width: int, radius: int, embed_dim: int, channels: int) -> None:
    ip = worst_case(width, radius, embed_dim, channels=channels)
    # context, (conv.0,) hidden.0, head, head_lo
    assert len(ip._fans) == (5 if channels else 4)
    if channels:  # fan_in 9 * 115 = 1035 is the largest float32-exact conv layer
        assert ip._fans[:3] == [9 * channels, 9 * channels, channels]
    for fan_in, dtype in zip(ip._fans, ip._float_dtypes, strict=True):
        worst = fan_in * 127 * 127
        # float32 only where every partial sum is an integer float32 represents exactly
        assert dtype == (torch.float32 if worst <= 2**24 else torch.float64), (fan_in, dtype)
        assert worst < (2**24 if dtype == torch.float32 else 2**53)
    x = torch.full((2, 5, 5), 3, dtype=torch.int64)
    steps = every_step(ip, x, torch.full((2,), 0, dtype=torch.int64))
    assert_same(steps, every_step_reference(ip, x, torch.full((2,), 0, dtype=torch.int64)), "worst case")
    # every activation saturates at 127, so every head accumulator is width * 127 * 127, exactly
    for a, q_hi, q_lo, q_every in steps:
        assert (a == 127).all()
        for q in (q_hi, q_lo, q_every):
            assert (q == (width * 127 * 127 + 2) >> 2).all()
    for layer, fan_in in enumerate(ip._fans):  # each layer's largest accumulation, exact
        assert int(ip._mm(torch.full((1, fan_in), 127.0), layer)[0, 0]) == fan_in * 127 * 127


@pytest.mark.parametrize("past", [False, True])
def test_int32_requantization_up_to_its_bound(past: bool) -> None:
    """A context layer whose worst case (every weight, embedding and input at 127) lands exactly on the
    largest int32 requantizes in int32 and still equals the reference; one multiplier unit more
    crosses 2^31, so it requantizes in int64 (and equals the reference too)."""
    ip = worst_case(16, 3, 16)
    tensors = ip.arrays()
    fan_in = 7 * 7 * 16
    limit = (2**31 - 1 - 1) // (fan_in * 127 * 127)  # (acc_max * M + 2^(S-1)) <= 2^31 - 1 at S = 1
    tensors["context.multiplier"][:] = limit + past
    ip = IntegerPrior(ip.config, tensors, matmul="float")
    bound = requant_bounds(ip.config, tensors)[0]
    assert (bound >= 2**31) == past and ("context" in ip.int32_layers) == (not past)
    assert bound >= 2**31 - fan_in * 127 * 127  # on the edge: within one multiplier unit of 2^31
    x = torch.full((2, 7, 7), 3, dtype=torch.int64)
    labels = torch.zeros(2, dtype=torch.int64)
    got = every_step(ip, x, labels)
    assert_same(got, every_step_reference(ip, x, labels), ("edge", past))
    assert all((a == 127).all() for a, *_ in got)  # the worst case was reached and saturated


def test_float32_would_not_be_exact_past_the_bound() -> None:
    """The bound is real: at fan_in 1041 the worst case is not a float32 integer, so a float32 GEMM
    could round it (this is why such layers accumulate in float64)."""
    worst = 1041 * 127 * 127
    assert worst > 2**24 and float(np.float32(worst)) != worst
    assert float(np.float32(1040 * 127 * 127)) == 1040 * 127 * 127


# ------------------------------------------------------------------------------- machine independence


TABLE_HASH_SCRIPT = """
import hashlib, sys, numpy as np, torch
from vqkit.codec.tables import frequencies_from_int_logits
from vqkit.priors.grouped import step_map
from vqkit.priors.integer import IntegerPrior
x = torch.from_numpy(np.load(sys.argv[1]))
labels = torch.arange(len(x)) % 3
digests = []
for path in sys.argv[2:]:
    ip = IntegerPrior.load(path)
    flat = step_map(ip.schedule, *x.shape[1:]).reshape(-1)
    for matmul, requant in (("float", "auto"), ("int_mm", "auto"), ("int_mm", "int64")):
        p = IntegerPrior(ip.config, ip.arrays(), matmul=matmul, requant=requant)
        h = hashlib.sha256()
        for s in range(p.steps):  # hi tables, then lo tables given the true hi, of every step
            a = p.step_hidden(x, s, labels)
            hi = p.split(x.reshape(len(x), -1)[:, torch.from_numpy(np.flatnonzero(flat == s))])[0]
            for q in (p.hi_logits(a), p.lo_logits(a, hi)):
                h.update(frequencies_from_int_logits(q.reshape(-1, q.shape[-1]).numpy()).tobytes())
        digests.append(h.hexdigest())
print(torch.backends.cpu.get_cpu_capability(), *digests)
"""


def reference_table_digest(ip: IntegerPrior, x: torch.Tensor, labels: torch.Tensor) -> str:
    """TABLE_HASH_SCRIPT's digest, from the NumPy reference."""
    h = hashlib.sha256()
    for _, q_hi, q_lo, _ in every_step_reference(ip, x, labels):
        for q in (q_hi, q_lo):
            h.update(frequencies_from_int_logits(q.reshape(-1, q.shape[-1])).tobytes())
    return h.hexdigest()


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":")[1].split()}


# Five fresh processes that import torch (~30 s): in the default run, as the codec promises portability.
def test_tables_identical_under_every_cpu_capability(tmp_path: Path) -> None:
    """Each run in a fresh process with the dispatch forced: ATen kernels (default / AVX2 / AVX512) and
    MKL's code path (SSE4.2 / AVX2). A capability this CPU lacks is skipped (and named)."""
    calibration = np.random.default_rng(0).integers(0, K, (16, 8, 8))
    priors = [
        export_integer(random_grouped(s, context=c), calibration)
        for s, c in (("4x4", "window"), ("2x2", "conv"))
    ]
    for i, ip in enumerate(priors):
        ip.save(tmp_path / f"ip{i}.safetensors")
    x, labels = random_batch(7, 16, 12, seed=2)
    labels = torch.arange(7) % 3
    np.save(tmp_path / "x.npy", x.numpy())
    want = [reference_table_digest(ip, x, labels) for ip in priors]
    flags = cpu_flags()
    runs = {("ATEN_CPU_CAPABILITY", "default"): True, ("ATEN_CPU_CAPABILITY", "avx2"): "avx2" in flags,
            ("ATEN_CPU_CAPABILITY", "avx512"): "avx512f" in flags and "avx512bw" in flags,
            ("MKL_ENABLE_INSTRUCTIONS", "SSE4_2"): "sse4_2" in flags,
            ("MKL_ENABLE_INSTRUCTIONS", "AVX2"): "avx2" in flags}  # fmt: skip
    skipped, checked = [], []
    for (var, value), available in runs.items():
        if not available:
            skipped.append(f"{var}={value}")
            continue
        env = {**os.environ, var: value, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        argv = [sys.executable, "-c", TABLE_HASH_SCRIPT, str(tmp_path / "x.npy")]
        argv += [str(tmp_path / f"ip{i}.safetensors") for i in range(len(priors))]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        capability, *digests = out.stdout.split()
        if var == "ATEN_CPU_CAPABILITY":  # the kernels really were the ones asked for
            assert capability.lower() == value, (value, capability)
        # per prior: float GEMM (MKL) and torch._int_mm, requantizing in int32; _int_mm in int64
        assert digests == [d for d in want for _ in range(3)], f"{var}={value}"
        checked.append(f"{var}={value}")
    assert checked
    if skipped:
        pytest.skip(f"checked {', '.join(checked)}; this CPU lacks {', '.join(skipped)}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_equals_cpu(exported: IntegerPrior) -> None:
    x, labels = random_batch(64, 16, 12, seed=4)
    want = every_step(exported, x, labels)
    for matmul in ("auto", "float", "int_mm"):  # auto: float64 on CUDA
        gpu = IntegerPrior(exported.config, exported.arrays(), device="cuda", matmul=matmul)
        assert_same(every_step(gpu, x.cuda(), labels.cuda()), want, matmul)
    one = IntegerPrior(exported.config, exported.arrays(), device="cuda")
    assert_same(every_step(one, x[:1].cuda(), labels[:1].cuda()), [[t[:1] for t in w] for w in want], "one")
    # same integers: the ideal bits differ at most by float64 rounding in log_softmax
    assert torch.allclose(
        one.nll_bits(x.cuda(), labels.cuda()).cpu(), exported.nll_bits(x, labels), rtol=1e-12
    )


# ------------------------------------------------------------------------------------ quantization loss


def structured_grids(n: int, seed: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8, 8) codes on a random slope, (a y + b x + c) mod k, 15 % of them replaced by uniform
    noise; the label is a function of the slope. Learnable context from every side."""
    rng = np.random.default_rng(seed)
    a, b, c = (rng.integers(0, m, (n, 1, 1)) for m in (3, 3, k))
    grid = (a * np.arange(8)[None, :, None] + b * np.arange(8)[None, None, :] + c) % k
    grid = np.where(rng.random((n, 8, 8)) < 0.15, rng.integers(0, k, (n, 8, 8)), grid)
    return grid.astype(np.int64), ((3 * a + b)[:, 0, 0] % 3).astype(np.int64)


# 4 x 8, and 5 x 8 with four masked lo values, in index order or under a shuffled code order; the
# window context, and the conv context (its residual layers quantized too)
@pytest.fixture(scope="module", params=[(32, False, "window"), (36, False, "window"), (36, True, "window"),
                                        (36, True, "conv")])  # fmt: skip
def trained(request: pytest.FixtureRequest) -> GroupedPrior:
    k, shuffle, context = request.param
    torch.manual_seed(0)
    sizes = {"radius": 2} if context == "window" else {"context": "conv", "channels": 16, "conv_layers": 3}
    prior = build_prior(PriorConfig(kind="grouped", schedule="2x2", codebook_size=k, num_classes=3,
                                    width=32, layers=2, embed_dim=8, **sizes))  # fmt: skip
    assert isinstance(prior, GroupedPrior)
    if shuffle:
        prior.set_code_order(np.random.default_rng(7).permutation(k))
    grids, labels = (torch.from_numpy(a) for a in structured_grids(512, 0, k))
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for step in range(60):
        rows = torch.arange(step * 64, step * 64 + 64) % 512
        loss = prior.training_nats(grids[rows], labels[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return prior.eval()


def test_integer_model_loses_under_one_percent(trained: GroupedPrior) -> None:
    k = trained.config.codebook_size
    cal, cal_labels = structured_grids(128, 1, k)
    ip = export_integer(trained, cal, cal_labels)
    shuffled = not torch.equal(trained.code_order, torch.arange(k))
    version = 4 if trained.config.context == "conv" else 3 if shuffled else 2
    assert ip.format_version == version and ("code_order" in ip.arrays()) == shuffled
    held, labels = structured_grids(256, 2, k)
    x, lab = torch.from_numpy(held), torch.from_numpy(labels)
    with torch.no_grad():
        float_bits = float(trained.nll_bits(x, lab).sum()) / held.size
    # it learned something (uniform: log2 K), so the comparison means something
    assert float_bits < 0.9 * np.log2(k), float_bits
    int_bits = float(ip.nll_bits(x, lab).sum()) / held.size
    assert abs(int_bits - float_bits) < 0.01 * float_bits, (int_bits, float_bits)
    # the coder's integer tables (hi, then lo given hi) cost what nll_bits says, within their resolution
    table_bits = 0.0
    for s, (_, q_hi, q_lo, _) in enumerate(every_step(ip, x, lab)):
        hi, lo = reference(ip).split(step_codes(ip.schedule, x, s).numpy().reshape(-1))
        table_bits += code_bits(frequencies_from_int_logits(q_hi.reshape(-1, ip.k_hi)), hi)
        table_bits += code_bits(frequencies_from_int_logits(q_lo.reshape(-1, ip.k_lo)), lo)
    assert table_bits / held.size == pytest.approx(int_bits, rel=2e-3)
    assert integer_mod.integer_bits_per_code(ip, held, labels) == pytest.approx(int_bits, rel=1e-12)


def test_int_logits_tables_are_the_float_tables_after_quantization() -> None:
    logits = np.random.default_rng(0).normal(0.0, 4.0, (50, 40))
    q = quantize_logits(logits)
    assert np.array_equal(frequencies_from_logits(logits), frequencies_from_int_logits(q))
    freq = frequencies_from_int_logits(q - (1 << 40))  # a shift of every logit changes nothing
    assert np.array_equal(freq, frequencies_from_int_logits(q)) and (freq.sum(axis=1) == TOTAL).all()
    assert LOGIT_BITS == integer_mod.LOGIT_BITS
    with pytest.raises(ValueError, match="int64"):
        frequencies_from_int_logits(logits)


# ------------------------------------------------------------------------------------------------ files


def test_save_load_round_trip(exported: IntegerPrior, tmp_path: Path) -> None:
    path = tmp_path / INTEGER_PRIOR_FILE
    exported.save(path)
    loaded = IntegerPrior.load(path)
    assert loaded.digest() == exported.digest() and loaded.config == exported.config
    assert loaded.info == exported.info
    x, labels = random_batch(5, 7, 6, seed=9)
    assert_same(every_step(loaded, x, labels), every_step(exported, x, labels), "loaded")
    other = IntegerPrior(exported.config, {**exported.arrays(), "shifts": exported.arrays()["shifts"] + 1})
    assert other.digest() != exported.digest()  # every tensor is in the digest


def test_a_code_order_is_saved_in_format_3_and_identity_stays_format_2(
    exported: IntegerPrior, tmp_path: Path
) -> None:
    """Index order writes format 2 files (so earlier files keep their digests); a code order adds the
    tensor code_order and format 3; the conv context is format 4 with or without one. A file whose
    version and tensors disagree is refused."""
    conv = exported.config.context == "conv"
    assert exported.format_version == (4 if conv else 2) and "code_order" not in exported.arrays()
    k = exported.codebook_size
    order = np.random.default_rng(3).permutation(k)
    shuffled = IntegerPrior(exported.config, {**exported.arrays(), "code_order": order})
    assert shuffled.format_version == (4 if conv else 3) and shuffled.digest() != exported.digest()
    codes = torch.arange(k)
    hi, lo = shuffled.split(codes)
    assert torch.equal(hi * shuffled.k_lo + lo, torch.from_numpy(order))
    assert torch.equal(shuffled.join(hi, lo), codes)
    path = tmp_path / "order.safetensors"
    shuffled.save(path)
    loaded = IntegerPrior.load(path)
    assert loaded.digest() == shuffled.digest() and np.array_equal(loaded.arrays()["code_order"], order)
    with pytest.raises(ValueError, match="identity"):
        IntegerPrior(exported.config, {**exported.arrays(), "code_order": np.arange(k)})
    with pytest.raises(ValueError, match="permutation"):
        IntegerPrior(exported.config, {**exported.arrays(), "code_order": np.zeros(k, dtype=np.int64)})
    bad = tmp_path / "bad.safetensors"
    for version in ("2", "3") if conv else ("2", "4"):
        rewrite(path, bad, meta={"format_version": version})
        with pytest.raises(RunError, match="disagree"):
            IntegerPrior.load(bad)


def safe_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata())


def rewrite(src: Path, dst: Path, *, tensors: dict[str, np.ndarray] | None = None,
            meta: dict[str, str] | None = None) -> None:  # fmt: skip
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(src), framework="numpy") as f:
        old_meta = f.metadata()
        old = {n: f.get_tensor(n) for n in f.keys()}  # noqa: SIM118
    save_file({**old, **(tensors or {})}, str(dst), metadata={**old_meta, **(meta or {})})


def test_damaged_and_foreign_files_are_refused(exported: IntegerPrior, tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    exported.save(good)
    a = exported.arrays()
    conv = exported.config.context == "conv"
    cases = {
        "truncated": lambda p: p.write_bytes(good.read_bytes()[:-100]),
        "flipped": lambda p: p.write_bytes(good.read_bytes()[:-1] + bytes([good.read_bytes()[-1] ^ 1])),
        "foreign": lambda p: rewrite(good, p, meta={"format": "vqkit-prior"}),
        "newer": lambda p: rewrite(good, p, meta={"format_version": "5"}),
        "other version": lambda p: rewrite(good, p, meta={"format_version": "3" if conv else "4"}),
        "dtype": lambda p: rewrite(good, p, tensors={"embed": a["embed"].astype(np.int64)}),
        "shape": lambda p: rewrite(good, p, tensors={"head.bias": a["head.bias"][:-1]}),
        "range": lambda p: rewrite(good, p, tensors={"head.weight": np.full_like(a["head.weight"], -128)}),
        "multiplier": lambda p: rewrite(
            good, p, tensors={"head.multiplier": a["head.multiplier"] + (1 << 16)}
        ),
        "shift": lambda p: rewrite(good, p, tensors={"shifts": np.zeros_like(a["shifts"])}),
        "head shift": lambda p: rewrite(good, p, tensors={"shifts": np.ones_like(a["shifts"])}),
        "hi_embed": lambda p: rewrite(good, p, tensors={"hi_embed": np.full_like(a["hi_embed"], -128)}),
        "no head_lo": lambda p: rewrite(good, p, tensors={"head_lo.bias": a["head.bias"]}),
        "conv config": lambda p: rewrite(
            good,
            p,
            meta={
                "prior_config": json.dumps(
                    {
                        **json.loads(safe_metadata(good)["prior_config"]),
                        "context": "window" if conv else "conv",
                    }
                )
            },
        ),
        "edited": lambda p: rewrite(
            good, p, tensors={"head.bias": a["head.bias"] + 1}
        ),  # valid, wrong digest
    }
    for name, make in cases.items():
        path = tmp_path / f"{name}.safetensors"
        make(path)
        with pytest.raises(RunError):
            IntegerPrior.load(path)
    with pytest.raises(RunError, match="no integer prior"):
        IntegerPrior.load(tmp_path / "missing.safetensors")
    rewrite(good, tmp_path / "v1.safetensors", meta={"format_version": "1"})  # the one-part head's format
    with pytest.raises(RunError, match="format 1, for the old one-part head"):
        IntegerPrior.load(tmp_path / "v1.safetensors")


# ------------------------------------------------------------------------------- vqkit prior train hook


@pytest.mark.parametrize("context", ["window", "conv"])
def test_prior_train_exports_the_integer_prior(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], context: str
) -> None:
    data = tmp_path / "data.npz"
    np.savez(data, images=smooth_images(96), labels=np.arange(96) % 3, class_names=np.array(["a", "b", "c"]))
    run = tmp_path / "run"
    train(tiny_run_config(str(data), max_steps=4), run, progress=False)
    grouped = ["--set", "model.kind=grouped", "--set", "model.width=16", "--set", "model.layers=2",
               "--set", "model.embed_dim=4", "--set", "model.radius=1", "--set", "train.batch_size=16",
               "--set", "train.warmup_steps=2", "--set", "train.checkpoint_every=5",
               "--set", f"model.context={context}", "--set", "model.channels=8"]  # fmt: skip
    assert main(["prior", "train", str(run), "--max-steps", "12", "--no-progress", *grouped]) == 0
    assert "integer network (prior_integer.safetensors)" in capsys.readouterr().out
    doc = json.loads((run / "prior_config.json").read_text())
    record = doc["integer"]
    ip = IntegerPrior.load(run / INTEGER_PRIOR_FILE)
    assert record["digest"] == ip.digest().hex() and record["data"] == "holdout"
    assert record["calibration_grids"] == doc["data"]["num_val"]
    assert ip.info["model_fingerprint"] == doc["model_fingerprint"]
    assert (
        abs(record["integer_bits_per_code"] - record["float_bits_per_code"])
        < 0.02 * record["float_bits_per_code"]
    )
    prior = load_prior(run)  # the integer network is the saved prior's
    assert isinstance(prior, GroupedPrior)
    assert ip.config == prior.config
    # training orders the codes by their vectors (grouped.codebook_order), and the export keeps it
    k = prior.config.codebook_size
    assert not torch.equal(prior.code_order, torch.arange(k))
    assert ip.format_version == (4 if context == "conv" else 3) and ip.config.context == context
    assert np.array_equal(ip.arrays()["code_order"], prior.code_order.numpy())
    # a grouped prior is not re-calibrated (no temperature): the exported network stays as it was
    assert main(["prior", "calibrate", str(run)]) == 1
    assert IntegerPrior.load(run / INTEGER_PRIOR_FILE).digest() == ip.digest()
    # a new training removes the old one before its first checkpoint
    assert main(["prior", "train", str(run), "--overwrite", "--max-steps", "2", "--no-progress",
                 "--set", "train.holdout=0", *grouped]) == 0  # fmt: skip
    assert not (run / INTEGER_PRIOR_FILE).exists()  # no held-out grids: no export, and no stale file
